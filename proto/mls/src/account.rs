//! A user's long-term *account key*: RSA-PSS-SHA256, registered as SPKI DER. Only its public
//! half is here: signatures are verified with `ring`; signing happens on the client.

use quip_proto::limits::{MAX_PUBLIC_KEY, MAX_SIGNATURE};
use ring::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};

/// DER of the AlgorithmIdentifier of every RSA SPKI: rsaEncryption, NULL parameters.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;

/// Splits one DER element with tag `tag` off the front of `input`: its contents and what
/// follows. Only the length forms a key up to [`MAX_PUBLIC_KEY`] needs, each minimal.
fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = match len {
        0x00..=0x7f => (usize::from(len), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            (len >= 0x80).then_some((usize::from(len), rest))?
        }
        0x82 => {
            let (len, rest) = rest.split_at_checked(2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            (len >= 0x100).then_some((len, rest))?
        }
        _ => return None,
    };
    rest.split_at_checked(len)
}

/// The PKCS#1 `RSAPublicKey` inside an RSA SubjectPublicKeyInfo (what ring parses), or
/// `None` for anything else. ring then checks the key itself (sizes 2048–8192 bits).
pub fn rsa_public_key(spki: &[u8]) -> Option<&[u8]> {
    if spki.len() > MAX_PUBLIC_KEY {
        return None;
    }
    let (body, trailing) = take(spki, SEQUENCE)?;
    if !trailing.is_empty() {
        return None;
    }
    let (bits, trailing) = take(body.strip_prefix(RSA_ALGORITHM)?, BIT_STRING)?;
    if !trailing.is_empty() {
        return None;
    }
    // A key is a whole number of bytes: no unused bits.
    bits.strip_prefix(&[0])
}

/// Verifies an RSA-PSS-SHA256 `signature` over `message` by the SPKI DER key `spki`.
pub fn verify(spki: &[u8], message: &[u8], signature: &[u8]) -> Result<(), &'static str> {
    let key = rsa_public_key(spki).ok_or("the key is not an RSA public key")?;
    if signature.len() > MAX_SIGNATURE {
        return Err("the signature is too long");
    }
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, key)
        .verify(message, signature)
        .map_err(|_| "bad signature")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_odd_der_is_refused() {
        let key = &[
            0x30, 0x13, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
            0x01, 0x05, 0x00, 0x03, 0x02, 0x00, 0x42,
        ][..];
        assert_eq!(rsa_public_key(key), Some(&[0x42][..]));
        // Every truncation, a trailing byte, unused bits, a non-minimal length, another
        // algorithm.
        for end in 0..key.len() {
            assert_eq!(rsa_public_key(&key[..end]), None, "cut at {end}");
        }
        let mut longer = key.to_vec();
        longer.push(0);
        assert_eq!(rsa_public_key(&longer), None);
        let mut unused = key.to_vec();
        unused[19] = 1;
        assert_eq!(rsa_public_key(&unused), None);
        let mut long_form = vec![0x30, 0x81, 0x13];
        long_form.extend_from_slice(&key[2..]);
        assert_eq!(rsa_public_key(&long_form), None);
        let mut ec = key.to_vec();
        ec[12] = 0x02;
        assert_eq!(rsa_public_key(&ec), None);
        assert_eq!(rsa_public_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
