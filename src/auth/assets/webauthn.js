// authgate: passkeys on the gateway's own pages (no inline script; served from
// /auth/assets/webauthn.js). Buttons carry what they need in data- attributes.
(() => {
  "use strict";
  const dec = (s) => {
    const b = s.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b + "===".slice((b.length + 3) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
  };
  const enc = (buf) =>
    btoa(String.fromCharCode(...new Uint8Array(buf)))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const say = (msg) => {
    const s = document.getElementById("passkey-status");
    if (s) s.textContent = msg;
  };
  async function post(url, body, headers) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: Object.assign({ "content-type": "application/json", accept: "application/json" }, headers || {}),
      body: JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(j.error_description || "the gateway answered " + r.status);
    return j;
  }
  async function register(btn) {
    const csrf = { "x-csrf-token": btn.dataset.csrf };
    const o = await post("/auth/account/passkeys/options", {}, csrf);
    const pk = o.options.publicKey;
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach((c) => { c.id = dec(c.id); });
    const cred = await navigator.credentials.create({ publicKey: pk });
    const name = document.getElementById("passkey-name");
    await post("/auth/account/passkeys", {
      state: o.state,
      name: name ? name.value : "",
      credential: {
        id: cred.id, rawId: enc(cred.rawId), type: cred.type,
        extensions: cred.getClientExtensionResults(),
        response: {
          attestationObject: enc(cred.response.attestationObject),
          clientDataJSON: enc(cred.response.clientDataJSON),
        },
      },
    }, csrf);
    location.reload();
  }
  async function signIn(btn) {
    const mfa = btn.dataset.mfaToken;
    const o = await post("/auth/login/webauthn/options", mfa ? { mfa_token: mfa } : {});
    const pk = o.options.publicKey;
    pk.challenge = dec(pk.challenge);
    (pk.allowCredentials || []).forEach((c) => { c.id = dec(c.id); });
    const a = await navigator.credentials.get({ publicKey: pk });
    const r = a.response;
    const done = await post("/auth/login/webauthn", {
      state: o.state, browser: true, next: btn.dataset.next || "",
      credential: {
        id: a.id, rawId: enc(a.rawId), type: a.type,
        extensions: a.getClientExtensionResults(),
        response: {
          authenticatorData: enc(r.authenticatorData),
          clientDataJSON: enc(r.clientDataJSON),
          signature: enc(r.signature),
          userHandle: r.userHandle ? enc(r.userHandle) : null,
        },
      },
    });
    location.assign(done.next || "/");
  }
  const on = (id, f) => {
    const b = document.getElementById(id);
    if (!b) return;
    if (!window.PublicKeyCredential) {
      say("This browser cannot use passkeys.");
      b.disabled = true;
      return;
    }
    b.addEventListener("click", async () => {
      b.disabled = true;
      say("Waiting for your passkey...");
      try { await f(b); } catch (e) { say("The passkey was not used: " + e.message); }
      b.disabled = false;
    });
  };
  on("add-passkey", register);
  on("use-passkey", signIn);
  on("passkey-sign-in", signIn);
})();
