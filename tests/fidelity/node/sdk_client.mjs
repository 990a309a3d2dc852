// Alipay's official Node.js SDK (alipay-sdk, pinned in package.json) against
// `cardform sandbox serve --cert-mode`: the SDK's certificate-mode requests
// (app_cert_sn and alipay_root_cert_sn computed by the SDK from the files)
// must be accepted, and the sandbox's answers must pass the SDK's own
// verification (validateSign, with the key the SDK reads from the Alipay
// certificate). Then AES content encryption (needEncrypt), and the refusals
// that show the checks are real.
//
// usage: node sdk_client.mjs GATEWAY_URL DIR
//   DIR holds keys/ (from `cardform keys generate`), keys/app_cert.crt,
//   keys/second.crt (another certificate for the same key), aes.key and the
//   sandbox data directory sb/ (alipay_cert.crt, alipay_root_cert.crt).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { AlipaySdk, AlipayFormData } from 'alipay-sdk';

const [gateway, dir] = process.argv.slice(2);
const file = (rel) => path.join(dir, rel);
const CERT_APP = '2021000000000077';
const AES_APP = '2021000000000078';

let passed = 0;
const ok = (what) => { console.log(`ok: ${what}`); passed += 1; };
const fail = (what, detail) => {
  console.error(`FAIL: ${what}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
  process.exit(1);
};

const sdk = (appId, extra = {}) => new AlipaySdk({
  appId,
  gateway,
  timeout: 10000,
  keyType: 'PKCS1',
  privateKey: fs.readFileSync(file('keys/app_private_pkcs1.pem'), 'ascii'),
  appCertPath: file('keys/app_cert.crt'),
  alipayPublicCertPath: file('sb/alipay_cert.crt'),
  alipayRootCertPath: file('sb/alipay_root_cert.crt'),
  ...extra,
});

const biz = {
  request_id: `node-${Date.now()}`,
  card_type: 'OUT_MEMBER_CARD',
  biz_no_suffix_len: '10',
  write_off_type: 'qrcode',
  template_style_info: {
    card_show_name: 'Node 会员卡',
    logo_id: 'LOGO',
    background_id: 'BG',
    bg_color: 'rgb(55,112,179)',
  },
  column_info_list: [{ code: 'BALANCE', title: '余额' }],
  field_rule_list: [{ field_name: 'Balance', rule_name: 'ASSIGN_FROM_REQUEST', rule_value: 'Balance' }],
};

// A PNG of the background's minimum size (a 1-bit grayscale, zlib'd).
function png(width, height) {
  const crc = (buf) => {
    let c = ~0;
    for (const b of buf) { c ^= b; for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xEDB88320 & -(c & 1)); }
    return (~c) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; ihdr[9] = 0;
  const row = Buffer.alloc(1 + Math.ceil(width / 8));
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

const merchant = { appAuthToken: '202405BBnodefidelity0000000000000X01' };

// 1. Multipart upload in certificate mode, answer verified by the SDK.
async function upload(client, name, width, height) {
  const form = new AlipayFormData();
  form.addField('image_type', 'png');
  form.addField('image_name', name);
  form.addField('app_auth_token', merchant.appAuthToken);
  const tmp = file(`${name}.png`);
  fs.writeFileSync(tmp, png(width, height));
  form.addFile('image_content', `${name}.png`, tmp);
  return client.exec('alipay.offline.material.image.upload', {}, { formData: form, validateSign: true });
}

const client = sdk(CERT_APP);
const logo = await upload(client, 'logo', 500, 500);
if (logo.code !== '10000' || !logo.imageId) fail('upload in certificate mode', logo);
const bg = await upload(client, 'bg', 1020, 643);
if (bg.code !== '10000') fail('upload in certificate mode', bg);
ok('the SDK\'s multipart upload (certificate mode) is accepted and its answer passes the SDK\'s verification');

// 2. biz_content calls, answers verified by the SDK.
biz.template_style_info.logo_id = logo.imageId;
biz.template_style_info.background_id = bg.imageId;
const created = await client.exec('alipay.marketing.card.template.create',
  { bizContent: biz, appAuthToken: merchant.appAuthToken }, { validateSign: true });
if (created.code !== '10000' || !created.templateId) fail('template.create in certificate mode', created);
const queried = await client.exec('alipay.marketing.card.template.query',
  { bizContent: { template_id: created.templateId }, appAuthToken: merchant.appAuthToken }, { validateSign: true });
if (queried.code !== '10000') fail('template.query in certificate mode', queried);
ok('the SDK\'s template.create and template.query (certificate mode) are accepted and verified by the SDK');

// 3. The sandbox checks what the SDK computed: a certificate for the same key
//    that is not the registered one is refused by its SN.
const other = sdk(CERT_APP, { appCertPath: file('keys/second.crt') });
const refused = await other.exec('alipay.marketing.card.template.query',
  { bizContent: { template_id: created.templateId }, appAuthToken: merchant.appAuthToken }, { validateSign: true });
if (refused.subCode !== 'isv.invalid-app-cert-sn') fail('an unregistered app certificate is refused', refused);
ok('an app certificate other than the registered one is refused (isv.invalid-app-cert-sn)');

// 4. The SDK's verification fails when the sandbox's answer is not signed by
//    the certificate it holds (so the passes above mean something).
const wrongAlipay = sdk(CERT_APP, { alipayPublicCertPath: file('keys/app_cert.crt') });
try {
  await wrongAlipay.exec('alipay.marketing.card.template.query',
    { bizContent: { template_id: created.templateId }, appAuthToken: merchant.appAuthToken }, { validateSign: true });
  fail('the SDK rejects an answer under another certificate', 'it verified');
} catch (e) {
  if (!String(e.message).includes('验签失败')) fail('the SDK rejects an answer under another certificate', e.message);
}
ok('the SDK\'s verification refuses the answer when it holds another Alipay certificate');

// 5. AES content encryption: the SDK encrypts biz_content (needEncrypt), the
//    sandbox decrypts, answers encrypted, and the SDK decrypts the answer.
const aes = sdk(AES_APP, { encryptKey: fs.readFileSync(file('aes.key'), 'ascii').trim() });
const plainRefused = await aes.exec('alipay.marketing.card.template.query',
  { bizContent: { template_id: created.templateId }, appAuthToken: merchant.appAuthToken }, { validateSign: true });
if (plainRefused.subCode !== 'isv.invalid-encrypt') fail('an app with encryption on refuses plain biz_content', plainRefused);
// Uploads carry no biz_content: they go unencrypted, as the SDK sends them.
const aesLogo = await upload(aes, 'aes-logo', 500, 500);
const aesBg = await upload(aes, 'aes-bg', 1020, 643);
if (aesLogo.code !== '10000' || aesBg.code !== '10000') fail('uploads of an app with encryption on', [aesLogo, aesBg]);
const aesBiz = {
  ...biz,
  request_id: `${biz.request_id}-aes`,
  template_style_info: { ...biz.template_style_info, logo_id: aesLogo.imageId, background_id: aesBg.imageId },
};
// Without validateSign: the SDK's getSignStr cuts the signed content from the
// first `{` to the last `}`, so it cannot extract an encrypted node (a JSON
// string, signed quotes included, as the Java and Python SDKs extract it:
// gateway.md §5.3) from any gateway, Alipay's included. cardform's client
// verifies encrypted answers (tests/testsuite/cert_mode.rs); here the SDK
// decrypts the answer, which must then hold the created template's id.
const encrypted = await aes.exec('alipay.marketing.card.template.create',
  { bizContent: aesBiz, appAuthToken: merchant.appAuthToken, needEncrypt: true });
if (encrypted.code !== '10000' || !encrypted.templateId) fail('template.create with AES', encrypted);
ok('the SDK\'s AES-encrypted template.create is accepted, and the SDK decrypts the encrypted answer');

console.log(`node fidelity: ${passed} passed, 0 failed`);
