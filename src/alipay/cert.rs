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
//! Plain computation over certificate bytes: no I/O, no client.

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

    #[test]
    fn what_is_not_a_usable_bundle_is_refused() {
        assert!(parse_bundle("not a certificate").is_err());
        let bundle = parse_bundle(ROOT).unwrap();
        let no_rsa = [bundle[0].clone(), bundle[2].clone()];
        assert!(root_cert_sn(&no_rsa).unwrap_err().contains("no RSA-signed"));
    }
}
