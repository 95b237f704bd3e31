//! Passkeys (WebAuthn) with `webauthn-rs`: the relying party from `login.webauthn`, the
//! stored form of a user's passkeys (sealed under the factor key), the user handle, and the
//! ceremony state, sealed into the options the browser gets and must send back, so any
//! replica finishes a ceremony another began (spent once, through the revocation store).

use crate::config::WebauthnConfig;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, Url, Uuid,
    Webauthn, WebauthnBuilder,
};

/// How long a ceremony may take (the browser's own timeout is five minutes).
pub const CEREMONY_SECS: u64 = 300;

/// The relying party `cfg` describes.
pub fn relying_party(cfg: &WebauthnConfig) -> Result<Webauthn, String> {
    let mut origins = cfg
        .origins
        .iter()
        .map(|o| Url::parse(o).map_err(|e| format!("origin {o:?}: {e}")));
    let first = origins.next().ok_or_else(|| "no origin".to_owned())??;
    let mut b = WebauthnBuilder::new(&cfg.rp_id, &first)
        .map_err(|e| format!("rp_id {:?} with origin {first}: {e}", cfg.rp_id))?
        .rp_name(&cfg.rp_name);
    for o in origins {
        b = b.append_allowed_origin(&o?);
    }
    b.build().map_err(|e| e.to_string())
}

/// The WebAuthn user handle of `user`: stable, and not the name itself.
pub fn user_handle(user: &str) -> Uuid {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("authgate webauthn user\0{user}").as_bytes(),
    );
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    Uuid::from_bytes(b)
}

/// A passkey as the user store keeps it (sealed).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredPasskey {
    /// The credential id, base64url (what removal names).
    pub id: String,
    pub name: String,
    pub created: u64,
    pub key: Passkey,
}

/// A ceremony in progress, as its sealed state carries it.
#[derive(Serialize, Deserialize)]
pub enum Ceremony {
    /// Adding a passkey to `user`'s account.
    Register {
        user: String,
        state: PasskeyRegistration,
    },
    /// The second step of `user`'s sign-in (the `mfa_token`'s jti).
    Second {
        user: String,
        jti: String,
        state: PasskeyAuthentication,
    },
    /// A passwordless sign-in: whoever's passkey it turns out to be.
    Discover { state: DiscoverableAuthentication },
}

pub fn passkey_context(user: &str) -> String {
    format!("passkey\0{user}")
}

pub fn ceremony_context(exp: u64) -> String {
    format!("webauthn-ceremony\0{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rp: &str, origins: &[&str]) -> WebauthnConfig {
        WebauthnConfig {
            rp_id: rp.into(),
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            rp_name: "App".into(),
        }
    }

    #[test]
    fn the_relying_party_takes_its_origins_and_user_handles_are_stable() {
        assert!(relying_party(&cfg("example.com", &["https://app.example.com"])).is_ok());
        assert!(relying_party(&cfg("localhost", &["http://localhost:8443"])).is_ok());
        assert!(relying_party(&cfg("example.com", &["https://evil.test"])).is_err());
        assert_eq!(user_handle("alice"), user_handle("alice"));
        assert_ne!(user_handle("alice"), user_handle("bob"));
    }

    /// A registration ceremony against the relying party: options that ask for a
    /// discoverable credential, and a made-up response refused.
    #[test]
    fn a_registration_must_answer_its_own_challenge() {
        let rp = relying_party(&cfg("localhost", &["http://localhost:8443"]))
            .unwrap_or_else(|e| panic!("{e}"));
        let (ccr, state) = rp
            .start_passkey_registration(user_handle("alice"), "alice", "alice", None)
            .unwrap_or_else(|e| panic!("{e}"));
        let json = serde_json::to_value(&ccr).unwrap_or_default();
        assert_eq!(json["publicKey"]["rp"]["id"], "localhost");
        let forged: webauthn_rs::prelude::RegisterPublicKeyCredential = serde_json::from_value(serde_json::json!({
            "id": "AAAA", "rawId": "AAAA", "type": "public-key", "extensions": {},
            "response": {"attestationObject": "o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YUA",
                         "clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoiQUFBQSIsIm9yaWdpbiI6Imh0dHA6Ly9sb2NhbGhvc3Q6ODQ0MyJ9"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(rp.finish_passkey_registration(&forged, &state).is_err());
    }
}
