//! Public-key-certificate mode (公钥证书模式): the certificate serial numbers
//! every request carries, computed as the official SDKs compute them.
//!
//! - `app_cert_sn` / `alipay_cert_sn`: md5 (hex) of the issuer's distinguished
//!   name in RFC 2253 order (the reverse of its DER order, `CN=…,OU=…,O=…,C=…`)
//!   followed by the serial number in decimal. Java SDK:
//!   `com.alipay.api.internal.util.AntCertificationUtil.getCertSN`
//!   (`md5(cert.getIssuerX500Principal().getName() + cert.getSerialNumber())`);
//!   Node SDK `alipay-sdk` `antcertutil.ts` `getSN` (issuer attributes reversed,
//!   joined by `,`, plus the decimal serial); gopay `GetCertSN`.
//! - `alipay_root_cert_sn`: those SNs for the certificates of the Alipay root
//!   bundle whose signature algorithm is RSA (OID prefix 1.2.840.113549.1.1,
//!   as the Java SDK's `getRootCertSN` tests), joined by `_` in bundle order.
//!
//! Checked against the published root bundle (`tests/data/certs/alipayRootCert.crt`,
//! which every SDK ships): its SN is the value the SDKs' examples carry.
//!
//! [`CertMode::load`] turns the three certificates into what the client
//! needs, refusing with the file's name what no SDK would notice until the
//! gateway says no: text that is not PEM, a certificate outside its validity
//! dates, an app certificate for another key, a root bundle without an RSA
//! certificate.
//!
//! Computation over certificate text: no I/O (the caller reads the files).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey;
use x509_cert::Certificate;
use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
use x509_cert::der::{self, Decode, Encode};

/// The RSA (PKCS #1) signature algorithms: sha1WithRSA, sha256WithRSA, ...
const RSA_SIGNATURES: &str = "1.2.840.113549.1.1.";

/// Every certificate in a PEM text, in order.
pub fn parse_bundle(pem: &str) -> Result<Vec<Certificate>, String> {
    let certs = Certificate::load_pem_chain(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate (or bundle): {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// The short name the SDKs print for an attribute type.
fn attribute_name(oid: &der::asn1::ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.9" => "STREET".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        other => other.to_string(),
    }
}

/// An attribute value as text (UTF8String, PrintableString, IA5String, ...).
fn attribute_value(value: &der::Any) -> String {
    if let Ok(s) = value.decode_as::<Utf8StringRef<'_>>() {
        return s.as_str().to_string();
    }
    if let Ok(s) = value.decode_as::<PrintableStringRef<'_>>() {
        return s.as_str().to_string();
    }
    String::from_utf8_lossy(value.value()).into_owned()
}

/// The issuer as the SDKs print it: RDNs last to first, `TYPE=value`, joined by `,`.
pub fn issuer_string(cert: &Certificate) -> String {
    cert.tbs_certificate
        .issuer
        .0
        .iter()
        .rev()
        .flat_map(|rdn| rdn.0.iter())
        .map(|atv| {
            format!(
                "{}={}",
                attribute_name(&atv.oid),
                attribute_value(&atv.value)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The serial number in decimal.
pub fn serial_decimal(cert: &Certificate) -> String {
    rsa::BigUint::from_bytes_be(cert.tbs_certificate.serial_number.as_bytes()).to_str_radix(10)
}

/// A certificate's SN: md5 hex of issuer + decimal serial.
pub fn cert_sn(cert: &Certificate) -> String {
    use md5::Digest;
    let text = format!("{}{}", issuer_string(cert), serial_decimal(cert));
    hex::encode(md5::Md5::digest(text.as_bytes()))
}

/// Whether a certificate is signed with an RSA algorithm.
pub fn rsa_signed(cert: &Certificate) -> bool {
    cert.signature_algorithm
        .oid
        .to_string()
        .starts_with(RSA_SIGNATURES)
}

/// The root bundle's SN: the RSA-signed certificates' SNs joined by `_`.
pub fn root_cert_sn(bundle: &[Certificate]) -> Result<String, String> {
    let sns: Vec<String> = bundle
        .iter()
        .filter(|c| rsa_signed(c))
        .map(cert_sn)
        .collect();
    if sns.is_empty() {
        return Err(
            "holds no RSA-signed certificate (the root bundle Alipay publishes has two)".into(),
        );
    }
    Ok(sns.join("_"))
}

/// The certificate's public key (SubjectPublicKeyInfo, DER).
pub fn public_key_der(cert: &Certificate) -> Result<Vec<u8>, String> {
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("its public key cannot be read: {e}"))
}

/// One certificate from DER bytes.
pub fn from_der(der: &[u8]) -> Result<Certificate, String> {
    Certificate::from_der(der).map_err(|e| format!("not a DER certificate: {e}"))
}

use super::keys::{AlipayPublicKey, AppPrivateKey, KeySource};

/// A certificate problem, naming the certificate and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("the {role} from {source_} {reason}{}", hint.as_deref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
pub struct CertError {
    pub role: &'static str,
    pub source_: KeySource,
    pub reason: String,
    pub hint: Option<String>,
}

pub const APP_CERT: &str = "app certificate";
pub const ALIPAY_CERT: &str = "Alipay public-key certificate";
pub const ROOT_CERT: &str = "Alipay root certificate";

/// Public-key-certificate mode, loaded and checked: the serial numbers
/// requests carry, and the Alipay key responses are verified with.
#[derive(Debug, Clone)]
pub struct CertMode {
    pub app_cert_sn: String,
    pub alipay_root_cert_sn: String,
    /// The SN of the configured Alipay certificate: a response naming
    /// another was signed under a certificate this client does not hold.
    pub alipay_cert_sn: String,
    /// Where the Alipay certificate came from, for the rotation message.
    pub alipay_cert_source: KeySource,
}

/// One certificate file's text, and where it came from.
pub struct CertText<'a> {
    pub text: &'a str,
    pub source: KeySource,
}

fn unix(t: &x509_cert::time::Time) -> SystemTime {
    UNIX_EPOCH + t.to_unix_duration()
}

fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

/// Whether `now` is within the certificate's validity, as an error if not.
pub fn check_validity(cert: &Certificate, now: SystemTime) -> Result<(), String> {
    let v = &cert.tbs_certificate.validity;
    let (from, until) = (unix(&v.not_before), unix(&v.not_after));
    if now < from {
        return Err(format!(
            "is not valid yet: valid from {} until {} (now {})",
            date(from),
            date(until),
            date(now)
        ));
    }
    if now > until {
        return Err(format!(
            "expired on {} (valid from {}; now {})",
            date(until),
            date(from),
            date(now)
        ));
    }
    Ok(())
}

/// The first certificate of a file (the one the SDKs read), checked for dates.
fn first_valid(
    role: &'static str,
    file: &CertText<'_>,
    now: SystemTime,
) -> Result<Certificate, CertError> {
    let err = |reason: String, hint: Option<&str>| CertError {
        role,
        source_: file.source.clone(),
        reason,
        hint: hint.map(str::to_string),
    };
    if !file.text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(err(
            "is not a PEM certificate (no `-----BEGIN CERTIFICATE-----` line)".into(),
            Some(if file.text.contains("PRIVATE KEY") {
                "this is a key; certificate mode wants the .crt files the Alipay console issues"
            } else {
                "use the .crt file the Alipay console issues, as downloaded"
            }),
        ));
    }
    let certs = parse_bundle(file.text).map_err(|e| err(format!("is {e}"), None))?;
    let cert = certs
        .into_iter()
        .next()
        .expect("bug: parse_bundle is non-empty");
    check_validity(&cert, now).map_err(|reason| {
        err(
            reason,
            Some(match role {
                APP_CERT => "renew the app certificate in the Alipay console and download it again",
                _ => "download Alipay's current certificate from the Alipay console",
            }),
        )
    })?;
    Ok(cert)
}

impl CertMode {
    /// Load the three certificates and check them against each other and the
    /// app private key. Returns the mode and the Alipay public key.
    pub fn load(
        app: CertText<'_>,
        alipay: CertText<'_>,
        root: CertText<'_>,
        private_key: &AppPrivateKey,
        now: SystemTime,
    ) -> Result<(Self, AlipayPublicKey), CertError> {
        let app_cert = first_valid(APP_CERT, &app, now)?;
        let app_key = public_key_der(&app_cert)
            .ok()
            .and_then(|der| rsa::RsaPublicKey::from_public_key_der(&der).ok());
        if !app_key.is_some_and(|k| private_key.is_pair_of(&k)) {
            return Err(CertError {
                role: APP_CERT,
                source_: app.source.clone(),
                reason: format!(
                    "does not certify the app private key from {}",
                    private_key.source()
                ),
                hint: Some(
                    "the app certificate is issued for the key pair whose CSR you uploaded; use that pair's private key, or issue a new certificate for this key".into(),
                ),
            });
        }
        let alipay_cert = first_valid(ALIPAY_CERT, &alipay, now)?;
        let spki = public_key_der(&alipay_cert).map_err(|reason| CertError {
            role: ALIPAY_CERT,
            source_: alipay.source.clone(),
            reason,
            hint: None,
        })?;
        let alipay_key = AlipayPublicKey::parse(
            &base64::engine::general_purpose::STANDARD.encode(spki),
            alipay.source.clone(),
        )
        .map_err(|e| CertError {
            role: ALIPAY_CERT,
            source_: alipay.source.clone(),
            reason: format!("holds no usable RSA key: {e}"),
            hint: None,
        })?;
        let root_err = |reason: String, hint: Option<&str>| CertError {
            role: ROOT_CERT,
            source_: root.source.clone(),
            reason,
            hint: hint.map(str::to_string),
        };
        if !root.text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(root_err(
                "is not a PEM certificate bundle".into(),
                Some("use alipayRootCert.crt as the Alipay console issues it"),
            ));
        }
        let bundle = parse_bundle(root.text).map_err(|e| root_err(format!("is {e}"), None))?;
        let alipay_root_cert_sn = root_cert_sn(&bundle).map_err(|e| {
            root_err(
                e,
                Some("is this the root bundle (alipayRootCert.crt), not the Alipay certificate?"),
            )
        })?;
        Ok((
            CertMode {
                app_cert_sn: cert_sn(&app_cert),
                alipay_root_cert_sn,
                alipay_cert_sn: cert_sn(&alipay_cert),
                alipay_cert_source: alipay.source,
            },
            alipay_key,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = include_str!("../../tests/data/certs/alipayRootCert.crt");

    #[test]
    fn the_published_root_bundle_has_the_sn_the_sdks_use() {
        let bundle = parse_bundle(ROOT).unwrap();
        assert_eq!(bundle.len(), 4);
        // SM2 and ECDSA roots are skipped; the two RSA ones count, in order.
        let rsa: Vec<bool> = bundle.iter().map(rsa_signed).collect();
        assert_eq!(rsa, [false, true, false, true]);
        assert_eq!(
            issuer_string(&bundle[1]),
            "CN=Ant Financial Certification Authority R1,OU=Certification Authority,O=Ant Financial,C=CN"
        );
        assert_eq!(serial_decimal(&bundle[1]), "2292228364100439313");
        assert_eq!(cert_sn(&bundle[1]), "687b59193f3f462dd5336e5abf83c5d8");
        assert_eq!(
            root_cert_sn(&bundle).unwrap(),
            "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6"
        );
    }

    /// SNs computed by the Node SDK itself (alipay-sdk 4.14.0,
    /// `antcertutil.getSN(file)` / `getSN(file, true)`) on certificates the
    /// sandbox made: an app certificate issued from a CSR, and a root bundle
    /// mixing Alipay's SM2 and ECDSA roots with one RSA root.
    #[test]
    fn sns_match_the_node_sdk_on_issued_certificates() {
        let app = parse_bundle(include_str!(
            "../../tests/data/certs/app_cert_sandbox_issued.crt"
        ))
        .unwrap();
        assert_eq!(cert_sn(&app[0]), "461dda9c1ceb87ed2b0521927869f677");
        let bundle = parse_bundle(include_str!(
            "../../tests/data/certs/sandbox_root_bundle.crt"
        ))
        .unwrap();
        assert_eq!(bundle.len(), 3);
        assert_eq!(
            root_cert_sn(&bundle).unwrap(),
            "2a6dbc1c4f6527da1554c94d3016f088"
        );
    }

    #[test]
    fn what_is_not_a_usable_bundle_is_refused() {
        assert!(parse_bundle("not a certificate").is_err());
        let bundle = parse_bundle(ROOT).unwrap();
        let no_rsa = [bundle[0].clone(), bundle[2].clone()];
        assert!(root_cert_sn(&no_rsa).unwrap_err().contains("no RSA-signed"));
    }
}
