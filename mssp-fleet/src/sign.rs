//! The controller's ed25519 key. Files hold the 32-byte seed (`controller.key`) or public
//! key (`controller.pub`) in base64, one line. A decision is published as its JSON bytes
//! and the signature over exactly those bytes; an edge parses only what verified.

use std::path::Path;

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use mssp_wire::fleet::{Decision, Signed};

use crate::FleetError;

fn read_32(path: &Path, what: &str) -> Result<[u8; 32], FleetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FleetError::Key(format!("{what} {}: {e}", path.display())))?;
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| FleetError::Key(format!("{what} {}: not base64 ({e})", path.display())))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        FleetError::Key(format!(
            "{what} {}: {} bytes, want 32 (mssp fleet keygen writes one)",
            path.display(),
            b.len()
        ))
    })
}

pub fn load_signing(path: &Path) -> Result<SigningKey, FleetError> {
    Ok(SigningKey::from_bytes(&read_32(path, "signing key")?))
}

pub fn load_public(path: &Path) -> Result<VerifyingKey, FleetError> {
    VerifyingKey::from_bytes(&read_32(path, "controller public key")?)
        .map_err(|e| FleetError::Key(format!("controller public key {}: {e}", path.display())))
}

/// A new key pair: (seed, public key), base64.
pub fn keygen() -> (String, String) {
    let k = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    (
        B64.encode(k.to_bytes()),
        B64.encode(k.verifying_key().to_bytes()),
    )
}

pub fn sign(key: &SigningKey, d: &Decision) -> Signed {
    let payload = serde_json::to_vec(d).expect("a decision serialises");
    let sig = key.sign(&payload);
    Signed {
        payload: B64.encode(&payload),
        sig: B64.encode(sig.to_bytes()),
    }
}

/// The decision in `bytes` (a [`Signed`] message), if the key signed it.
pub fn verify(key: &VerifyingKey, bytes: &[u8]) -> Result<Decision, FleetError> {
    let s: Signed = serde_json::from_slice(bytes)
        .map_err(|e| FleetError::Refused(format!("not a signed decision: {e}")))?;
    let payload = B64
        .decode(&s.payload)
        .map_err(|e| FleetError::Refused(format!("payload: {e}")))?;
    let sig = B64
        .decode(&s.sig)
        .map_err(|e| FleetError::Refused(format!("signature: {e}")))?;
    let sig: [u8; 64] = sig
        .try_into()
        .map_err(|_| FleetError::Refused("signature: not 64 bytes".into()))?;
    key.verify(&payload, &Signature::from_bytes(&sig))
        .map_err(|_| {
            FleetError::Refused("signature does not verify with the controller key".into())
        })?;
    serde_json::from_slice(&payload).map_err(|e| FleetError::Refused(format!("decision: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mssp_wire::fleet::DecisionItem;

    fn decision() -> Decision {
        Decision {
            id: "fb-1".into(),
            version: 1,
            customer: Some(7),
            item: DecisionItem::Source {
                prefix: "198.18.66.0/24".into(),
                action: "drop".into(),
            },
            created: time::OffsetDateTime::UNIX_EPOCH,
            expires: time::OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1),
            removed: false,
            reason: "test".into(),
            comment: None,
        }
    }

    #[test]
    fn signed_decisions_verify_and_forged_ones_do_not() {
        let (seed, _) = keygen();
        let key = SigningKey::from_bytes(&B64.decode(seed).unwrap().try_into().unwrap());
        let s = sign(&key, &decision());
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(verify(&key.verifying_key(), &bytes).unwrap(), decision());
        // Another key.
        let other = SigningKey::from_bytes(&[7; 32]);
        assert!(verify(&other.verifying_key(), &bytes).is_err());
        // The payload altered (a broker rewriting the prefix).
        let mut d = decision();
        d.item = DecisionItem::Source {
            prefix: "0.0.0.0/0".into(),
            action: "drop".into(),
        };
        let forged = Signed {
            payload: B64.encode(serde_json::to_vec(&d).unwrap()),
            sig: s.sig.clone(),
        };
        assert!(verify(&key.verifying_key(), &serde_json::to_vec(&forged).unwrap()).is_err());
        // Unsigned.
        assert!(verify(&key.verifying_key(), &serde_json::to_vec(&d).unwrap()).is_err());
    }
}
