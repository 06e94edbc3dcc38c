//! The measurement JSON: nitro-cli's `build-enclave`/`describe-eif` output shape, which is also
//! our PCR policy file format (the attestation crate parses it). Its shape must not change:
//! `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": hex, "PCR1": hex, "PCR2": hex[, "PCR8": hex]}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::EifError;

/// Hex digits of one SHA-384 PCR value.
const PCR_HEX_LEN: usize = 96;

/// The `HashAlgorithm` value we print: nitro-cli's documented output (the `Debug` of sha2 0.9's
/// `Sha384`), fixed so the policy format does not follow a dependency's `Debug` text.
pub const HASH_ALGORITHM: &str = "Sha384 { ... }";

/// Other spellings of SHA-384 accepted on input: the image-format crate 0.8 with sha2 0.10
/// prints `Sha512_48 { .. }` (digest 0.10 names `Sha384` as SHA-512 truncated to 48 bytes, with
/// the SHA-384 initial values: the same function).
const HASH_ALGORITHM_ALIASES: [&str; 2] = [HASH_ALGORITHM, "Sha512_48 { .. }"];

/// The document: one `Measurements` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementDoc {
    /// The measured values.
    #[serde(rename = "Measurements")]
    pub measurements: Measurements,
}

/// PCR0/1/2 (and PCR8 when the image is signed) of one EIF, lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measurements {
    /// The hash: always [`HASH_ALGORITHM`] (`Sha384 { ... }`) once parsed.
    #[serde(rename = "HashAlgorithm")]
    pub hash_algorithm: String,
    /// Kernel, kernel command line and both ramdisks: the whole image.
    #[serde(rename = "PCR0")]
    pub pcr0: String,
    /// Kernel, kernel command line and the bootstrap ramdisk (AWS's part).
    #[serde(rename = "PCR1")]
    pub pcr1: String,
    /// The application ramdisk (our enclave executable, `cmd`, `env`).
    #[serde(rename = "PCR2")]
    pub pcr2: String,
    /// The signing certificate, when the EIF is signed.
    #[serde(rename = "PCR8", skip_serializing_if = "Option::is_none", default)]
    pub pcr8: Option<String>,
}

impl Measurements {
    /// From the map the image-format crate's `get_pcrs` returns.
    pub(crate) fn from_crate_map(mut map: BTreeMap<String, String>) -> Result<Self, EifError> {
        let mut take = |key: &str| {
            map.remove(key)
                .ok_or_else(|| EifError::Image(format!("measurement {key} missing")))
        };
        let hash_algorithm = canonical_hash_algorithm(&take("HashAlgorithm")?)?;
        let pcr0 = take("PCR0")?;
        let pcr1 = take("PCR1")?;
        let pcr2 = take("PCR2")?;
        let pcr8 = map.remove("PCR8");
        let measurements = Self {
            hash_algorithm,
            pcr0,
            pcr1,
            pcr2,
            pcr8,
        };
        measurements.check()?;
        Ok(measurements)
    }

    /// Checks that every PCR is 96 lowercase hex digits (SHA-384).
    fn check(&self) -> Result<(), EifError> {
        let pcrs = [
            Some(&self.pcr0),
            Some(&self.pcr1),
            Some(&self.pcr2),
            self.pcr8.as_ref(),
        ];
        for pcr in pcrs.into_iter().flatten() {
            let ok = pcr.len() == PCR_HEX_LEN
                && pcr
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                return Err(EifError::Image(format!(
                    "measurement {pcr:?} is not a SHA-384 hex digest"
                )));
            }
        }
        Ok(())
    }

    /// The measurement JSON, pretty-printed as nitro-cli prints it, with a final newline.
    pub fn to_json(&self) -> Result<String, EifError> {
        let doc = MeasurementDoc {
            measurements: self.clone(),
        };
        let mut text = serde_json::to_string_pretty(&doc)?;
        text.push('\n');
        Ok(text)
    }

    /// Parses a measurement JSON document (e.g. a pinned policy file), checking the PCR values.
    pub fn from_json(text: &str) -> Result<Self, EifError> {
        let doc: MeasurementDoc = serde_json::from_str(text)?;
        let mut measurements = doc.measurements;
        measurements.hash_algorithm = canonical_hash_algorithm(&measurements.hash_algorithm)?;
        measurements.check()?;
        Ok(measurements)
    }
}

/// [`HASH_ALGORITHM`] for any accepted spelling of SHA-384; an error for any other hash.
fn canonical_hash_algorithm(name: &str) -> Result<String, EifError> {
    if HASH_ALGORITHM_ALIASES.contains(&name) {
        Ok(HASH_ALGORITHM.to_owned())
    } else {
        Err(EifError::Image(format!(
            "unexpected hash algorithm {name:?}, expected SHA-384"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pcr8: Option<String>) -> Measurements {
        Measurements {
            hash_algorithm: "Sha384 { ... }".to_owned(),
            pcr0: "0".repeat(96),
            pcr1: "a".repeat(96),
            pcr2: "1f".repeat(48),
            pcr8,
        }
    }

    #[test]
    fn json_has_nitro_cli_shape_and_key_order() {
        let json = sample(None).to_json().unwrap();
        let expected = format!(
            "{{\n  \"Measurements\": {{\n    \"HashAlgorithm\": \"Sha384 {{ ... }}\",\n    \
             \"PCR0\": \"{}\",\n    \"PCR1\": \"{}\",\n    \"PCR2\": \"{}\"\n  }}\n}}\n",
            "0".repeat(96),
            "a".repeat(96),
            "1f".repeat(48)
        );
        assert_eq!(json, expected);
        assert!(!json.contains("PCR8"));
    }

    #[test]
    fn pcr8_round_trips_when_signed() {
        let m = sample(Some("b".repeat(96)));
        let json = m.to_json().unwrap();
        assert!(json.contains("\"PCR8\""));
        assert_eq!(Measurements::from_json(&json).unwrap(), m);
    }

    #[test]
    fn malformed_documents_are_refused() {
        assert!(Measurements::from_json("{}").is_err());
        let mut bad = sample(None);
        bad.pcr1 = "XYZ".to_owned();
        let json = serde_json::to_string(&MeasurementDoc { measurements: bad }).unwrap();
        assert!(matches!(
            Measurements::from_json(&json),
            Err(EifError::Image(_))
        ));
        let extra = r#"{"Measurements": {"HashAlgorithm": "x", "PCR0": "", "PCR1": "", "PCR2": "", "PCR3": ""}}"#;
        assert!(matches!(
            Measurements::from_json(extra),
            Err(EifError::Json(_))
        ));
    }

    #[test]
    fn hash_algorithm_is_normalised_to_nitro_cli_spelling() {
        let mut map = BTreeMap::new();
        map.insert("HashAlgorithm".to_owned(), "Sha512_48 { .. }".to_owned());
        for pcr in ["PCR0", "PCR1", "PCR2"] {
            map.insert(pcr.to_owned(), "0".repeat(96));
        }
        let m = Measurements::from_crate_map(map.clone()).unwrap();
        assert_eq!(m.hash_algorithm, "Sha384 { ... }");
        map.insert("HashAlgorithm".to_owned(), "Sha256 { .. }".to_owned());
        assert!(matches!(
            Measurements::from_crate_map(map),
            Err(EifError::Image(_))
        ));
        let other = r#"{"Measurements": {"HashAlgorithm": "Sha512_48 { .. }", "PCR0": "PLACE", "PCR1": "PLACE", "PCR2": "PLACE"}}"#
            .replace("PLACE", &"a".repeat(96));
        assert_eq!(
            Measurements::from_json(&other).unwrap().hash_algorithm,
            HASH_ALGORITHM
        );
    }

    #[test]
    fn crate_map_without_pcr_is_an_error() {
        let mut map = BTreeMap::new();
        map.insert("HashAlgorithm".to_owned(), "Sha384 { ... }".to_owned());
        map.insert("PCR0".to_owned(), "0".repeat(96));
        assert!(Measurements::from_crate_map(map).is_err());
    }
}
