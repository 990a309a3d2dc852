//! Every credential mode, run as a user onboards: `keys generate`, a
//! certificate issued from the CSR, `sandbox serve --cert-mode` and AES
//! content encryption; apply and `cardform api` through each, and each way
//! certificates go wrong (expired, for another key, not the registered one,
//! a root bundle without RSA, Alipay's certificate rotated).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const CERT_APP: &str = "2021000000000077";

/// A user's directory: keys and certificates made with cardform's own
/// commands, commands run inside it with relative paths.
struct Onboarded {
    tmp: tempfile::TempDir,
}

impl Onboarded {
    fn new() -> Onboarded {
        let o = Onboarded {
            tmp: tempfile::tempdir().unwrap(),
        };
        run(o.at().args(["keys", "generate", "--out", "keys"]))
            .ok()
            .stdout_has("keys/app.csr");
        run(o.at().args([
            "sandbox",
            "issue-cert",
            "--data",
            "sb",
            "--csr",
            "keys/app.csr",
            "--out",
            "keys/app_cert.crt",
        ]))
        .ok();
        o
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    fn at(&self) -> Command {
        let mut c = cardform();
        c.current_dir(self.dir());
        c
    }

    /// A certificate-mode sandbox on `sb/` with the app registered by its
    /// certificate, plus `extra` flags.
    fn serve(&self, extra: &[&str]) -> Sandbox {
        let mut args = vec![
            "--cert-mode".to_string(),
            "--app".into(),
            format!("{CERT_APP}={}", self.path("keys/app_cert.crt").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Sandbox::serve(&self.path("sb"), &args)
    }

    /// `cardform` in certificate mode against `sb`, every path relative.
    fn client(&self, sb: &Sandbox) -> Command {
        let mut c = self.at();
        c.env("CARDFORM_ENDPOINT", &sb.url)
            .env("CARDFORM_APP_ID", CERT_APP)
            .env("CARDFORM_PRIVATE_KEY", "keys/app_private.pem")
            .env("CARDFORM_APP_CERT", "keys/app_cert.crt")
            .env("CARDFORM_ALIPAY_CERT", "sb/alipay_cert.crt")
            .env("CARDFORM_ALIPAY_ROOT_CERT", "sb/alipay_root_cert.crt");
        c
    }

    fn project(&self) {
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee"),
            &self.path("proj"),
        );
    }
}

fn query(c: &mut Command) -> Run {
    run(c.args([
        "api",
        "alipay.marketing.card.template.batchquery",
        "--biz-content",
        r#"{"page_no":1,"page_size":20}"#,
    ]))
}

#[test]
fn keys_generate_writes_every_form_and_never_overwrites() {
    let o = Onboarded::new();
    let read = |f: &str| std::fs::read_to_string(o.path(f)).unwrap();
    assert!(read("keys/app_private.pem").starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(read("keys/app_private_pkcs1.pem").starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let line = read("keys/app_public.txt");
    assert_eq!(line.trim().lines().count(), 1);
    assert!(line.starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
    assert!(read("keys/app.csr").starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(read("keys/app_cert.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(o.path("keys/app_private_pkcs1.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private keys are for their owner only");
    }
    run(o.at().args(["keys", "generate", "--out", "keys"]))
        .fails()
        .stderr_has("refusing to overwrite a private key");
    // Every private form is the same key: the PKCS#1 file signs as well.
    let sb = o.serve(&[]);
    query(
        o.client(&sb)
            .env("CARDFORM_PRIVATE_KEY", "keys/app_private_pkcs1.pem"),
    )
    .ok();
}

#[test]
fn apply_and_api_in_certificate_mode() {
    let o = Onboarded::new();
    o.project();
    let sb = o.serve(&[]);
    run(o.client(&sb).args(["apply", "proj", "--auto-approve"]))
        .ok()
        .stderr_has("Apply complete: 14 done, 0 failed");
    run(o
        .client(&sb)
        .args(["plan", "proj", "--refresh", "--detailed-exitcode"]))
    .ok();
    let r = query(&mut o.client(&sb)).ok();
    assert!(r.stdout.contains("template_id"), "{}", r.stdout);

    // The sandbox checks the serial numbers: a public-key-mode client of a
    // certificate-mode app is refused with the missing parameter named.
    let r = query(
        o.client(&sb)
            .env_remove("CARDFORM_APP_CERT")
            .env_remove("CARDFORM_ALIPAY_CERT")
            .env_remove("CARDFORM_ALIPAY_ROOT_CERT")
            .env("CARDFORM_ALIPAY_PUBLIC_KEY", "sb/platform_public.pem"),
    )
    .fails();
    assert!(r.stderr.contains("isv.missing-app-cert-sn"), "{}", r.stderr);
    // Alipay's published root bundle is not this gateway's.
    let r = query(o.client(&sb).env(
        "CARDFORM_ALIPAY_ROOT_CERT",
        data("certs/alipayRootCert.crt"),
    ))
    .fails();
    assert!(
        r.stderr.contains("isv.invalid-root-cert-sn"),
        "{}",
        r.stderr
    );
}

#[test]
fn certificate_problems_are_named_before_any_call() {
    let o = Onboarded::new();
    let sb = o.serve(&[]);
    // Expired: issued for zero days.
    run(o.at().args([
        "sandbox",
        "issue-cert",
        "--data",
        "sb",
        "--csr",
        "keys/app.csr",
        "--out",
        "expired.crt",
        "--days",
        "0",
    ]))
    .ok();
    let r = query(o.client(&sb).env("CARDFORM_APP_CERT", "expired.crt")).fails();
    assert!(
        r.stderr
            .contains("app certificate from file `expired.crt` expired on"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("valid from"), "{}", r.stderr);

    // For another key: a second key pair's private key with this certificate.
    run(o.at().args(["keys", "generate", "--out", "other"])).ok();
    let r = query(
        o.client(&sb)
            .env("CARDFORM_PRIVATE_KEY", "other/app_private.pem"),
    )
    .fails();
    assert!(
        r.stderr
            .contains("does not certify the app private key from file `other/app_private.pem`"),
        "{}",
        r.stderr
    );

    // Not a certificate at all.
    let r = query(
        o.client(&sb)
            .env("CARDFORM_ALIPAY_CERT", "keys/app_public.pem"),
    )
    .fails();
    assert!(
        r.stderr.contains(
            "Alipay public-key certificate from file `keys/app_public.pem` is not a PEM certificate"
        ),
        "{}",
        r.stderr
    );

    // A root bundle without an RSA certificate: Alipay's SM2 and ECDSA roots only.
    let published = std::fs::read_to_string(data("certs/alipayRootCert.crt")).unwrap();
    let blocks: Vec<&str> = published
        .split_inclusive("-----END CERTIFICATE-----")
        .collect();
    std::fs::write(o.path("no_rsa.crt"), format!("{}{}", blocks[0], blocks[2])).unwrap();
    let r = query(o.client(&sb).env("CARDFORM_ALIPAY_ROOT_CERT", "no_rsa.crt")).fails();
    assert!(
        r.stderr
            .contains("root certificate from file `no_rsa.crt` holds no RSA-signed certificate"),
        "{}",
        r.stderr
    );

    // A valid certificate for the right key, but not the one registered:
    // the gateway refuses its SN.
    run(o.at().args([
        "sandbox",
        "issue-cert",
        "--data",
        "sb",
        "--csr",
        "keys/app.csr",
        "--out",
        "second.crt",
    ]))
    .ok();
    let r = query(o.client(&sb).env("CARDFORM_APP_CERT", "second.crt")).fails();
    assert!(r.stderr.contains("isv.invalid-app-cert-sn"), "{}", r.stderr);

    // Half of certificate mode is a configuration error, not a silent fallback.
    let r = query(o.client(&sb).env_remove("CARDFORM_ALIPAY_ROOT_CERT")).fails();
    assert!(
        r.stderr.contains("`alipay_root_cert` is not configured"),
        "{}",
        r.stderr
    );
    // The sandbox itself refuses a certificate without --cert-mode.
    let r = run(o.at().args([
        "sandbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        "sb2",
        "--app",
        &format!("{CERT_APP}=keys/app_cert.crt"),
    ]))
    .fails();
    assert!(r.stderr.contains("needs certificate mode"), "{}", r.stderr);
}

#[test]
fn a_rotated_alipay_certificate_is_named_and_a_rerun_reconciles() {
    let o = Onboarded::new();
    o.project();
    let sb = o.serve(&[]);
    run(o.client(&sb).args(["apply", "proj", "--auto-approve"])).ok();
    sb.stop();
    std::fs::copy(o.path("sb/alipay_cert.crt"), o.path("held.crt")).unwrap();
    let sb = o.serve(&["--rotate-alipay-cert"]);
    let rotated = std::fs::read_to_string(o.path("sb/alipay_cert.crt")).unwrap();
    assert_ne!(
        rotated,
        std::fs::read_to_string(o.path("held.crt")).unwrap()
    );

    // A changed manifest, applied with the old certificate: the call's
    // answer is refused, naming the new SN and what to do.
    let manifest = o.path("proj/cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("Brew Club"));
    std::fs::write(&manifest, text.replacen("Brew Club", "Brew Club+", 1)).unwrap();
    let r = run(o.client(&sb).env("CARDFORM_ALIPAY_CERT", "held.crt").args([
        "apply",
        "proj",
        "--auto-approve",
    ]))
    .fails();
    assert!(
        r.stderr.contains("Alipay has rotated its certificate"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("from file `held.crt`"), "{}", r.stderr);
    assert!(r.stderr.contains("download Alipay's new"), "{}", r.stderr);

    // With the new certificate the same apply completes, nothing duplicated.
    run(o.client(&sb).args(["apply", "proj", "--auto-approve"])).ok();
    run(o
        .client(&sb)
        .args(["plan", "proj", "--refresh", "--detailed-exitcode"]))
    .ok();
}

#[test]
fn aes_content_encryption_in_both_modes() {
    let o = Onboarded::new();
    o.project();
    std::fs::write(o.path("aes.key"), "aYA0GP8JEW+D7/UFaskCWA==\n").unwrap();
    std::fs::write(o.path("wrong.key"), "AAAAAAAAAAAAAAAAAAAAAA==\n").unwrap();
    let flag = format!("{CERT_APP}={}", o.path("aes.key").display());
    let sb = o.serve(&["--encrypt-key", &flag]);

    // The app has encryption switched on: plain biz_content is refused.
    let r = query(&mut o.client(&sb)).fails();
    assert!(r.stderr.contains("isv.invalid-encrypt"), "{}", r.stderr);
    // A wrong key: the gateway cannot decrypt.
    let r = query(o.client(&sb).env("CARDFORM_ENCRYPT_KEY", "wrong.key")).fails();
    assert!(
        r.stderr
            .contains("isv.decryption-error-not-valid-encrypt-key"),
        "{}",
        r.stderr
    );
    // With the key: apply (uploads go unencrypted, as they carry no
    // biz_content), then a no-op plan read back through encrypted answers.
    run(o.client(&sb).env("CARDFORM_ENCRYPT_KEY", "aes.key").args([
        "apply",
        "proj",
        "--auto-approve",
    ]))
    .ok()
    .stderr_has("Apply complete: 14 done, 0 failed");
    run(o.client(&sb).env("CARDFORM_ENCRYPT_KEY", "aes.key").args([
        "plan",
        "proj",
        "--refresh",
        "--detailed-exitcode",
    ]))
    .ok();
    let r = query(o.client(&sb).env("CARDFORM_ENCRYPT_KEY", "aes.key")).ok();
    assert!(r.stdout.contains("template_id"), "{}", r.stdout);
    sb.stop();

    // Public-key mode with encryption; the key from the manifest's gateway block.
    let pk = Sandbox::start(
        &o.path("pk"),
        &[
            "--encrypt-key",
            &format!("{APP_ID}={}", o.path("aes.key").display()),
        ],
    );
    let manifest = o.path("proj/cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let with_key = text.replacen(
        "gateway:\n  endpoint: sandbox\n",
        "gateway:\n  endpoint: sandbox\n  encrypt_key: { env: SHOP_AES_KEY }\n",
        1,
    );
    assert_ne!(with_key, text);
    std::fs::write(&manifest, with_key).unwrap();
    let r = run(pk
        .cardform()
        .current_dir(o.dir())
        .env("SHOP_AES_KEY", "aYA0GP8JEW+D7/UFaskCWA==")
        .env("CARDFORM_STATE", "state-pk")
        .args(["apply", "proj", "--auto-approve"]))
    .ok()
    .stderr_has("Apply complete: 14 done, 0 failed");
    assert!(!r.stdout.contains("aYA0GP8J") && !r.stderr.contains("aYA0GP8J"));
}
