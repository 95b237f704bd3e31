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

    /// A ceremony Chromium's virtual authenticator answered (recorded by
    /// `AUTHGATE_RECORD_WEBAUTHN=1 cargo test --test passkeys_browser`): the relying party,
    /// the server's state, the browser's answer.
    fn recorded(text: &str) -> (Webauthn, Ceremony, serde_json::Value) {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let rp = relying_party(&cfg(
            v["rp_id"].as_str().unwrap_or_default(),
            &[v["origin"].as_str().unwrap_or_default()],
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let ceremony =
            serde_json::from_value(v["ceremony"].clone()).unwrap_or_else(|e| panic!("{e}"));
        (rp, ceremony, v["credential"].clone())
    }

    const REGISTRATION: &str = include_str!("../../../tests/fixtures/webauthn/registration.json");
    const AUTHENTICATION: &str =
        include_str!("../../../tests/fixtures/webauthn/authentication.json");

    #[test]
    fn a_recorded_registration_verifies_and_an_altered_one_does_not() {
        let (rp, ceremony, credential) = recorded(REGISTRATION);
        let Ceremony::Register { user, state } = ceremony else {
            panic!("not a registration");
        };
        assert_eq!(user, "alice");
        let answer: webauthn_rs::prelude::RegisterPublicKeyCredential =
            serde_json::from_value(credential.clone()).unwrap_or_else(|e| panic!("{e}"));
        let key = rp
            .finish_passkey_registration(&answer, &state)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                key.cred_id().as_ref()
            ),
            credential["id"].as_str().unwrap_or_default()
        );
        // Another challenge (the answer to some other ceremony) is refused.
        let (_, other) = rp
            .start_passkey_registration(user_handle("alice"), "alice", "alice", None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rp.finish_passkey_registration(&answer, &other).is_err());
        // So is the same answer for another origin.
        let elsewhere = relying_party(&cfg("localhost", &["http://localhost:1"]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(elsewhere
            .finish_passkey_registration(&answer, &state)
            .is_err());
    }

    #[test]
    fn a_recorded_assertion_verifies_and_an_altered_one_does_not() {
        let (rp, ceremony, credential) = recorded(AUTHENTICATION);
        let Ceremony::Second { user, state, .. } = ceremony else {
            panic!("not a second step");
        };
        assert_eq!(user, "alice");
        let answer: webauthn_rs::prelude::PublicKeyCredential =
            serde_json::from_value(credential.clone()).unwrap_or_else(|e| panic!("{e}"));
        let result = rp
            .finish_passkey_authentication(&answer, &state)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(result.user_verified());
        // A signature with one byte changed.
        let mut bad = credential.clone();
        let sig = bad["response"]["signature"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let flipped = if sig.starts_with('M') {
            sig.replacen('M', "N", 1)
        } else {
            format!("M{}", &sig[1..])
        };
        bad["response"]["signature"] = serde_json::Value::from(flipped);
        let bad: webauthn_rs::prelude::PublicKeyCredential =
            serde_json::from_value(bad).unwrap_or_else(|e| panic!("{e}"));
        assert!(rp.finish_passkey_authentication(&bad, &state).is_err());
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
