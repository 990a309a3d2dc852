//! Making certificates, for the two places cardform plays the other side of
//! certificate mode: the sandbox's certificate authority (its root bundle, the
//! Alipay certificate it signs responses under, app certificates it issues
//! from a CSR, as the console does) and `keys generate` (the app's CSR).
//!
//! RSA with SHA-256 throughout (what Alipay issues); x509-cert's builder does
//! the encoding, the `rsa` crate signs.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rsa::pkcs8::EncodePublicKey;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile, RequestBuilder};
use x509_cert::der::{Decode, Encode, EncodePem, pem::LineEnding};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

#[derive(Debug, thiserror::Error)]
#[error("cannot make the certificate: {0}")]
pub struct PkiError(String);

fn err(e: impl std::fmt::Display) -> PkiError {
    PkiError(e.to_string())
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    pub from: SystemTime,
    pub until: SystemTime,
}

impl Period {
    /// From an hour ago (clock skew) for `days`.
    pub fn days_from_now(days: u64) -> Self {
        let now = SystemTime::now();
        Period {
            from: now - Duration::from_secs(3600),
            until: now + Duration::from_secs(days * 86_400),
        }
    }

    fn validity(&self) -> Result<Validity, PkiError> {
        let time = |t: SystemTime| -> Result<Time, PkiError> {
            let d = t.duration_since(UNIX_EPOCH).map_err(err)?;
            // Whole seconds: certificate times have no fractions.
            let d = Duration::from_secs(d.as_secs());
            Ok(Time::GeneralTime(
                x509_cert::der::asn1::GeneralizedTime::from_unix_duration(d).map_err(err)?,
            ))
        };
        Ok(Validity {
            not_before: time(self.from)?,
            not_after: time(self.until)?,
        })
    }
}

/// A random positive 64-bit serial number.
fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| err("the system RNG failed"))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    SerialNumber::new(&bytes).map_err(err)
}

fn name(dn: &str) -> Result<Name, PkiError> {
    Name::from_str(dn).map_err(|e| err(format!("bad name `{dn}`: {e}")))
}

fn spki(key: &RsaPublicKey) -> Result<SubjectPublicKeyInfoOwned, PkiError> {
    let der = key.to_public_key_der().map_err(err)?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(err)
}

fn signer(key: &RsaPrivateKey) -> rsa::pkcs1v15::SigningKey<Sha256> {
    rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone())
}

/// A self-signed root CA certificate, e.g. `CN=…,O=…,C=CN`.
pub fn root(key: &RsaPrivateKey, dn: &str, period: Period) -> Result<Certificate, PkiError> {
    let signer = signer(key);
    CertificateBuilder::new(
        Profile::Root,
        serial()?,
        period.validity()?,
        name(dn)?,
        spki(&key.to_public_key())?,
        &signer,
    )
    .map_err(err)?
    .build::<rsa::pkcs1v15::Signature>()
    .map_err(err)
}

/// A certificate for `subject_key`, issued by `issuer` (signed with its key).
pub fn issue(
    issuer: &Certificate,
    issuer_key: &RsaPrivateKey,
    dn: &str,
    subject_key: &RsaPublicKey,
    period: Period,
) -> Result<Certificate, PkiError> {
    issue_spki(issuer, issuer_key, name(dn)?, spki(subject_key)?, period)
}

fn issue_spki(
    issuer: &Certificate,
    issuer_key: &RsaPrivateKey,
    subject: Name,
    subject_spki: SubjectPublicKeyInfoOwned,
    period: Period,
) -> Result<Certificate, PkiError> {
    let signer = signer(issuer_key);
    CertificateBuilder::new(
        Profile::Leaf {
            issuer: issuer.tbs_certificate.subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        serial()?,
        period.validity()?,
        subject,
        subject_spki,
        &signer,
    )
    .map_err(err)?
    .build::<rsa::pkcs1v15::Signature>()
    .map_err(err)
}

/// A certificate signing request for `key`, as PEM (what the Alipay console
/// asks for when an app switches to certificate mode).
pub fn csr(key: &RsaPrivateKey, dn: &str) -> Result<String, PkiError> {
    let signer = signer(key);
    let req = RequestBuilder::new(name(dn)?, &signer)
        .map_err(err)?
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(err)?;
    req.to_pem(LineEnding::LF).map_err(err)
}

/// Issue a certificate from a CSR (PEM), after checking the CSR's signature:
/// what the console does with the CSR an app uploads.
pub fn issue_from_csr(
    issuer: &Certificate,
    issuer_key: &RsaPrivateKey,
    csr_pem: &str,
    period: Period,
) -> Result<Certificate, PkiError> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    use x509_cert::der::DecodePem;
    let req = x509_cert::request::CertReq::from_pem(csr_pem.trim().as_bytes())
        .map_err(|e| err(format!("not a PEM certificate request: {e}")))?;
    let spki_der = req.info.public_key.to_der().map_err(err)?;
    let key = RsaPublicKey::from_public_key_der(&spki_der)
        .map_err(|_| err("the request's key is not RSA"))?;
    let info = req.info.to_der().map_err(err)?;
    let sig = rsa::pkcs1v15::Signature::try_from(req.signature.raw_bytes())
        .map_err(|_| err("the request's signature is malformed"))?;
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)
        .verify(&info, &sig)
        .map_err(|_| err("the request's signature does not verify (SHA256withRSA)"))?;
    issue_spki(
        issuer,
        issuer_key,
        req.info.subject.clone(),
        req.info.public_key.clone(),
        period,
    )
}

/// PEM text of a certificate.
pub fn pem(cert: &Certificate) -> Result<String, PkiError> {
    cert.to_pem(LineEnding::LF).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::cert;

    fn key() -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap()
    }

    #[test]
    fn issued_certificates_read_back_with_their_issuer_and_period() {
        let ca_key = key();
        let ca = root(
            &ca_key,
            "CN=Test Root,O=Test,C=CN",
            Period::days_from_now(10),
        )
        .unwrap();
        let app_key = key();
        let req = csr(&app_key, "CN=2021000000000001,O=Shop,C=CN").unwrap();
        let app = issue_from_csr(&ca, &ca_key, &req, Period::days_from_now(5)).unwrap();
        let back = cert::parse_bundle(&pem(&app).unwrap()).unwrap();
        assert_eq!(cert::issuer_string(&back[0]), "CN=Test Root,O=Test,C=CN");
        assert!(cert::rsa_signed(&back[0]));
        assert!(cert::check_validity(&back[0], SystemTime::now()).is_ok());
        let later = SystemTime::now() + Duration::from_secs(6 * 86_400);
        assert!(
            cert::check_validity(&back[0], later)
                .unwrap_err()
                .contains("expired")
        );
        // A request whose signature does not match its key is refused.
        let tampered = req.replace(&req[100..104], "AAAA");
        assert!(issue_from_csr(&ca, &ca_key, &tampered, Period::days_from_now(5)).is_err());
    }
}
