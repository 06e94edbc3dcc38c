//! The attestation payload: the CBOR map inside the COSE_Sign1, decoded with AWS's field limits.
//!
//! Strict: text keys only, no duplicates, no unknown fields, nothing after the map. Says nothing
//! about authenticity; that is [`crate::verify`]'s job.

use std::collections::BTreeMap;

use coset::cbor::value::Value;

use crate::doc::{AttestationDoc, PCR_COUNT, Pcr, PcrIndex, UnixMillis, read_one};
use crate::error::{Error, Result};

/// Largest certificate, public key, user data or nonce (AWS "Verifying the root of trust").
const MAX_FIELD_LEN: usize = 1024;

impl AttestationDoc {
    /// Encodes the payload as CBOR, fields in the order real NSMs use.
    pub(crate) fn to_payload_cbor(&self) -> Result<Vec<u8>> {
        let opt = |v: &Option<Vec<u8>>| v.clone().map_or(Value::Null, Value::Bytes);
        let map = Value::Map(vec![
            (text("module_id"), Value::Text(self.module_id.clone())),
            (text("digest"), text("SHA384")),
            (
                text("timestamp"),
                Value::Integer(self.timestamp.as_millis().into()),
            ),
            (
                text("pcrs"),
                Value::Map(
                    self.pcrs
                        .iter()
                        .map(|(i, p)| {
                            (
                                Value::Integer(i.get().into()),
                                Value::Bytes(p.as_bytes().to_vec()),
                            )
                        })
                        .collect(),
                ),
            ),
            (text("certificate"), Value::Bytes(self.certificate.clone())),
            (
                text("cabundle"),
                Value::Array(self.cabundle.iter().cloned().map(Value::Bytes).collect()),
            ),
            (text("public_key"), opt(&self.public_key)),
            (text("user_data"), opt(&self.user_data)),
            (text("nonce"), opt(&self.nonce)),
        ]);
        encode_value(&map)
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Serializes a CBOR value.
pub(crate) fn encode_value(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    coset::cbor::ser::into_writer(value, &mut out).map_err(|e| Error::MalformedPayload {
        reason: format!("cannot encode: {e}"),
    })?;
    Ok(out)
}

/// Stores `value` in `slot`, refusing a second occurrence of the key.
fn put<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(Error::DuplicateKey(key.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

fn bytes_field(field: &'static str, value: Value, min: usize) -> Result<Vec<u8>> {
    let Value::Bytes(b) = value else {
        return Err(Error::InvalidField {
            field,
            reason: "must be a byte string",
        });
    };
    if b.len() < min || b.len() > MAX_FIELD_LEN {
        return Err(Error::InvalidField {
            field,
            reason: if min > 0 {
                "length must be 1..=1024 bytes"
            } else {
                "length must be at most 1024 bytes"
            },
        });
    }
    Ok(b)
}

fn optional_bytes_field(field: &'static str, value: Value, min: usize) -> Result<Option<Vec<u8>>> {
    match value {
        Value::Null => Ok(None),
        other => bytes_field(field, other, min).map(Some),
    }
}

fn decode_pcrs(value: Value) -> Result<BTreeMap<PcrIndex, Pcr>> {
    let Value::Map(entries) = value else {
        return Err(Error::InvalidField {
            field: "pcrs",
            reason: "must be a map",
        });
    };
    if entries.is_empty() || entries.len() > usize::from(PCR_COUNT) {
        return Err(Error::InvalidField {
            field: "pcrs",
            reason: "must have 1..=32 entries",
        });
    }
    let mut pcrs = BTreeMap::new();
    for (key, value) in entries {
        let index = match key {
            Value::Integer(i) => u8::try_from(i).ok().and_then(PcrIndex::new),
            _ => None,
        }
        .ok_or(Error::InvalidField {
            field: "pcrs",
            reason: "index must be an integer in 0..32",
        })?;
        let Value::Bytes(bytes) = value else {
            return Err(Error::InvalidField {
                field: "pcrs",
                reason: "value must be a byte string",
            });
        };
        if pcrs.insert(index, Pcr::new(bytes)?).is_some() {
            return Err(Error::DuplicateKey(format!("pcrs[{index}]")));
        }
    }
    Ok(pcrs)
}

fn decode_cabundle(value: Value) -> Result<Vec<Vec<u8>>> {
    let Value::Array(items) = value else {
        return Err(Error::InvalidField {
            field: "cabundle",
            reason: "must be an array",
        });
    };
    if items.is_empty() {
        return Err(Error::InvalidField {
            field: "cabundle",
            reason: "must not be empty",
        });
    }
    items
        .into_iter()
        .map(|item| bytes_field("cabundle", item, 1))
        .collect()
}

/// Decodes and checks the payload map.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<AttestationDoc> {
    let Value::Map(entries) = read_one(payload, "payload")? else {
        return Err(Error::MalformedPayload {
            reason: "payload is not a CBOR map".to_owned(),
        });
    };
    let mut module_id = None;
    let mut digest = None;
    let mut timestamp = None;
    let mut pcrs = None;
    let mut certificate = None;
    let mut cabundle = None;
    let mut public_key = None;
    let mut user_data = None;
    let mut nonce = None;
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err(Error::MalformedPayload {
                reason: "payload map key is not a text string".to_owned(),
            });
        };
        match key.as_str() {
            "module_id" => {
                let v = match value {
                    Value::Text(t) if !t.is_empty() => t,
                    _ => {
                        return Err(Error::InvalidField {
                            field: "module_id",
                            reason: "must be a non-empty text string",
                        });
                    }
                };
                put(&mut module_id, &key, v)?;
            }
            "digest" => {
                if !matches!(&value, Value::Text(t) if t == "SHA384") {
                    return Err(Error::InvalidField {
                        field: "digest",
                        reason: "must be \"SHA384\"",
                    });
                }
                put(&mut digest, &key, ())?;
            }
            "timestamp" => {
                let v = match value {
                    Value::Integer(i) => u64::try_from(i).ok().filter(|t| *t > 0),
                    _ => None,
                }
                .ok_or(Error::InvalidField {
                    field: "timestamp",
                    reason: "must be an unsigned integer > 0",
                })?;
                put(&mut timestamp, &key, UnixMillis::new(v))?;
            }
            "pcrs" => put(&mut pcrs, &key, decode_pcrs(value)?)?,
            "certificate" => put(
                &mut certificate,
                &key,
                bytes_field("certificate", value, 1)?,
            )?,
            "cabundle" => put(&mut cabundle, &key, decode_cabundle(value)?)?,
            "public_key" => put(
                &mut public_key,
                &key,
                optional_bytes_field("public_key", value, 1)?,
            )?,
            "user_data" => put(
                &mut user_data,
                &key,
                optional_bytes_field("user_data", value, 0)?,
            )?,
            "nonce" => put(&mut nonce, &key, optional_bytes_field("nonce", value, 0)?)?,
            _ => return Err(Error::UnknownField(key)),
        }
    }
    digest.ok_or(Error::MissingField("digest"))?;
    Ok(AttestationDoc {
        module_id: module_id.ok_or(Error::MissingField("module_id"))?,
        timestamp: timestamp.ok_or(Error::MissingField("timestamp"))?,
        pcrs: pcrs.ok_or(Error::MissingField("pcrs"))?,
        certificate: certificate.ok_or(Error::MissingField("certificate"))?,
        cabundle: cabundle.ok_or(Error::MissingField("cabundle"))?,
        public_key: public_key.flatten(),
        user_data: user_data.flatten(),
        nonce: nonce.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{REAL_DOC, REAL_TS, unsigned_cose, with_field};
    use coset::{CoseSign1Builder, HeaderBuilder, iana};

    fn parse_payload(payload: &Value) -> Result<AttestationDoc> {
        AttestationDoc::parse_unverified(&unsigned_cose(payload, 96))
    }

    fn field_err(key: &str, value: Value) -> Error {
        parse_payload(&with_field(key, Some(value))).unwrap_err()
    }

    #[test]
    fn real_document_parses_unverified() {
        let doc = AttestationDoc::parse_unverified(REAL_DOC).unwrap();
        assert_eq!(doc.timestamp(), REAL_TS);
        assert_eq!(doc.certificate().len(), 639);
        assert_eq!(
            doc.cabundle().iter().map(Vec::len).collect::<Vec<_>>(),
            [533, 706, 793, 644]
        );
    }

    #[test]
    fn payload_round_trips_through_our_encoder() {
        let doc = AttestationDoc::parse_unverified(REAL_DOC).unwrap();
        let cose = unsigned_cose(
            &read_one(&doc.to_payload_cbor().unwrap(), "payload").unwrap(),
            96,
        );
        assert_eq!(AttestationDoc::parse_unverified(&cose).unwrap(), doc);
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let doc = parse_payload(&with_field("public_key", Some(Value::Null))).unwrap();
        assert_eq!(doc.public_key(), None);
        let doc = parse_payload(&with_field("user_data", None)).unwrap();
        assert_eq!(doc.user_data(), None);
        let doc = parse_payload(&with_field("nonce", Some(Value::Bytes(vec![])))).unwrap();
        assert_eq!(doc.nonce(), Some(&[][..]));
    }

    #[test]
    fn missing_required_fields_are_refused() {
        for key in [
            "module_id",
            "digest",
            "timestamp",
            "pcrs",
            "certificate",
            "cabundle",
        ] {
            let err = parse_payload(&with_field(key, None)).unwrap_err();
            assert!(
                matches!(err, Error::MissingField(k) if k == key),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn field_limits_are_enforced() {
        let cases: Vec<(&str, Value)> = vec![
            ("module_id", Value::Text(String::new())),
            ("module_id", Value::Bytes(b"x".to_vec())),
            ("digest", Value::Text("SHA256".into())),
            ("timestamp", Value::Integer(0.into())),
            ("timestamp", Value::Integer((-5).into())),
            ("pcrs", Value::Map(vec![])),
            (
                "pcrs",
                Value::Map(vec![(Value::Integer(32.into()), Value::Bytes(vec![0; 48]))]),
            ),
            (
                "pcrs",
                Value::Map(vec![(Value::Integer(1.into()), Value::Bytes(vec![0; 47]))]),
            ),
            (
                "pcrs",
                Value::Map(vec![(Value::Text("0".into()), Value::Bytes(vec![0; 48]))]),
            ),
            (
                "pcrs",
                Value::Map(
                    (0..33)
                        .map(|i| (Value::Integer(i.into()), Value::Bytes(vec![0; 48])))
                        .collect(),
                ),
            ),
            ("certificate", Value::Bytes(vec![])),
            ("certificate", Value::Bytes(vec![1; 1025])),
            ("cabundle", Value::Array(vec![])),
            ("cabundle", Value::Array(vec![Value::Bytes(vec![])])),
            ("cabundle", Value::Bytes(vec![1])),
            ("public_key", Value::Bytes(vec![])),
            ("public_key", Value::Bytes(vec![1; 1025])),
            ("user_data", Value::Bytes(vec![1; 1025])),
            ("nonce", Value::Bytes(vec![1; 1025])),
            ("nonce", Value::Text("abc".into())),
        ];
        for (key, value) in cases {
            let err = field_err(key, value.clone());
            assert!(
                matches!(&err, Error::InvalidField { field, .. } if *field == key),
                "{key}={value:?}: {err}"
            );
        }
        // Limits are inclusive.
        assert!(parse_payload(&with_field("user_data", Some(Value::Bytes(vec![1; 1024])))).is_ok());
        assert!(
            parse_payload(&with_field(
                "pcrs",
                Some(Value::Map(vec![(
                    Value::Integer(31.into()),
                    Value::Bytes(vec![0; 64])
                )]))
            ))
            .is_ok()
        );
    }

    #[test]
    fn duplicate_and_unknown_keys_are_refused() {
        let Value::Map(mut entries) = with_field("nonce", Some(Value::Null)) else {
            unreachable!()
        };
        entries.push((Value::Text("nonce".into()), Value::Null));
        let err = parse_payload(&Value::Map(entries)).unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateKey(k) if k == "nonce"),
            "{err}"
        );

        let pcrs = Value::Map(vec![
            (Value::Integer(0.into()), Value::Bytes(vec![1; 48])),
            (Value::Integer(0.into()), Value::Bytes(vec![2; 48])),
        ]);
        let err = field_err("pcrs", pcrs);
        assert!(
            matches!(&err, Error::DuplicateKey(k) if k == "pcrs[0]"),
            "{err}"
        );

        let err = field_err("extra", Value::Null);
        assert!(
            matches!(&err, Error::UnknownField(k) if k == "extra"),
            "{err}"
        );
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let err = parse_payload(&Value::Array(vec![])).unwrap_err();
        assert!(matches!(err, Error::MalformedPayload { .. }), "{err}");
        let err =
            parse_payload(&Value::Map(vec![(Value::Integer(1.into()), Value::Null)])).unwrap_err();
        assert!(matches!(err, Error::MalformedPayload { .. }), "{err}");
        // Payload bytes that are not CBOR, and payload with trailing bytes.
        for (payload, trailing) in [
            (vec![0xff_u8], false),
            (
                [encode_value(&with_field("nonce", None)).unwrap(), vec![0]].concat(),
                true,
            ),
        ] {
            let cose = CoseSign1Builder::new()
                .protected(
                    HeaderBuilder::new()
                        .algorithm(iana::Algorithm::ES384)
                        .build(),
                )
                .payload(payload)
                .signature(vec![0; 96])
                .build();
            let bytes = coset::CborSerializable::to_vec(cose).unwrap();
            let err = AttestationDoc::parse_unverified(&bytes).unwrap_err();
            if trailing {
                assert!(
                    matches!(err, Error::TrailingBytes { what: "payload" }),
                    "{err}"
                );
            } else {
                assert!(matches!(err, Error::MalformedPayload { .. }), "{err}");
            }
        }
    }
}
