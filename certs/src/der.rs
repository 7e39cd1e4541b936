//! Just enough DER to give a certificate a subject with several
//! organization values.
//!
//! The gateway reads each `O` of a client certificate as one group, as
//! Kubernetes does. rcgen's distinguished name holds one value per attribute
//! type, so moat lets rcgen build and sign the certificate with the common
//! name alone, then puts the full subject into the to-be-signed part and
//! signs that again with the CA key. Everything else rcgen wrote (serial,
//! validity, extensions, algorithm) is kept byte for byte.

use rcgen::SigningKey;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const BIT_STRING: u8 = 0x03;

/// The DER of `2.5.4.3` (commonName) and `2.5.4.10` (organizationName).
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
const OID_ORGANIZATION: [u8; 3] = [0x55, 0x04, 0x0a];

/// A Name with one CN followed by one O per value, each its own RDN.
pub fn subject_name(common_name: &str, organizations: &[String]) -> Vec<u8> {
    let rdn = |oid: &[u8], value: &str| {
        let attr = [tlv(OID, oid), tlv(UTF8_STRING, value.as_bytes())].concat();
        tlv(SET, &tlv(SEQUENCE, &attr))
    };
    let mut rdns = rdn(&OID_COMMON_NAME, common_name);
    for org in organizations {
        rdns.extend(rdn(&OID_ORGANIZATION, org));
    }
    tlv(SEQUENCE, &rdns)
}

/// Replaces the subject of `cert_der` with `subject` and signs it again.
pub fn with_subject(
    cert_der: &[u8],
    subject: &[u8],
    issuer_key: &impl SigningKey,
) -> Result<Vec<u8>, String> {
    let cert = children(single(cert_der, SEQUENCE)?)?;
    let [tbs, algorithm, _signature] = cert.as_slice() else {
        return Err("a certificate has three parts".into());
    };
    let mut fields = children(single(tbs, SEQUENCE)?)?;
    // version [0], serial, signature algorithm, issuer, validity, subject, ...
    const SUBJECT: usize = 5;
    if fields.len() <= SUBJECT || fields[0].first() != Some(&0xa0) {
        return Err("unexpected to-be-signed layout".into());
    }
    fields[SUBJECT] = subject;
    let tbs = tlv(SEQUENCE, &fields.concat());
    let signature = issuer_key.sign(&tbs).map_err(|e| e.to_string())?;
    let bits = [&[0u8][..], &signature].concat();
    Ok(tlv(
        SEQUENCE,
        &[&tbs[..], algorithm, &tlv(BIT_STRING, &bits)].concat(),
    ))
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The content of the one TLV that `der` must be, with the expected tag.
fn single(der: &[u8], tag: u8) -> Result<&[u8], String> {
    let (element, rest) = split_first(der)?;
    if !rest.is_empty() || element.first() != Some(&tag) {
        return Err(format!("expected one element with tag {tag:#04x}"));
    }
    Ok(&element[header_len(element)?..])
}

/// The TLVs (whole, header included) that make up `content`.
fn children(mut content: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (element, rest) = split_first(content)?;
        out.push(element);
        content = rest;
    }
    Ok(out)
}

fn split_first(der: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let header = header_len(der)?;
    let len = content_len(der)?;
    let end = header
        .checked_add(len)
        .filter(|end| *end <= der.len())
        .ok_or("DER element runs past its end")?;
    Ok(der.split_at(end))
}

fn header_len(der: &[u8]) -> Result<usize, String> {
    match der.get(1) {
        Some(b) if *b < 0x80 => Ok(2),
        Some(b) => Ok(2 + (*b & 0x7f) as usize),
        None => Err("truncated DER".into()),
    }
}

fn content_len(der: &[u8]) -> Result<usize, String> {
    let first = *der.get(1).ok_or("truncated DER")?;
    if first < 0x80 {
        return Ok(first as usize);
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return Err("unsupported DER length".into());
    }
    let bytes = der.get(2..2 + n).ok_or("truncated DER")?;
    Ok(bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let der = tlv(SEQUENCE, &content);
            assert_eq!(single(&der, SEQUENCE).unwrap(), &content[..]);
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(single(&[0x30, 0x05, 1, 2], SEQUENCE).is_err());
        assert!(single(&[0x30], SEQUENCE).is_err());
        assert!(single(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], SEQUENCE).is_err());
    }
}
