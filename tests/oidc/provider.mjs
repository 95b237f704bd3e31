// A real OpenID Provider for the OIDC tests: the npm package oidc-provider (8.x, installed by
// scripts/oidc-setup.sh into target/oidc-provider) on 127.0.0.1 with ONE client, its built-in
// development login and consent pages (any login name, any password), back-channel logout,
// RP-initiated logout and PKCE (S256) required. tests/support/oidc.rs starts it.
//
//   node tests/oidc/provider.mjs [ISSUER] [PORT]
//
// Environment:
//   OIDC_ISSUER, OIDC_PORT   when not given as arguments (issuer default http://127.0.0.1:PORT)
//   OIDC_CLIENT              the client's metadata as JSON: client_id, client_secret (absent: a
//                            public client, token_endpoint_auth_method "none"), redirect_uris,
//                            post_logout_redirect_uris, backchannel_logout_uri, any other
//                            client metadata oidc-provider knows
//   OIDC_OPTIONS             optional JSON merged over the configuration below (plain data only,
//                            e.g. {"clientAuthMethods": ["client_secret_post"]}, {"ttl":
//                            {"IdToken": 5}}); "features" is merged one level deep
//   OIDC_PROVIDER_DIR        the install folder (default: target/oidc-provider of this repo)
//
// Accounts: the account id (`sub`) is the login name. Claims: preferred_username = login, name,
// email = <login>@example.com and email_verified = true, except: a login starting "unverified"
// has email_verified = false, one starting "other" has the email <login>@other.org; groups =
// ["ops-admins", "eng"] for "boss", [] for a login starting "nogroups", else ["eng"].
//
// Prints `READY <issuer>` once listening; stops on SIGTERM/SIGINT. Logs one line per
// back-channel logout attempt: `BACKCHANNEL ok client=.. sub=.. sid=..` or
// `BACKCHANNEL error client=.. sub=.. sid=.. <message>`.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const installDir = process.env.OIDC_PROVIDER_DIR || resolve(here, '../../target/oidc-provider');
const entry = resolve(installDir, 'node_modules/oidc-provider/lib/index.js');
let Provider;
try {
  ({ default: Provider } = await import(pathToFileURL(entry).href));
} catch (err) {
  console.error(`cannot load oidc-provider from ${entry} (run scripts/oidc-setup.sh): ${err.message}`);
  process.exit(2);
}

const port = Number(process.argv[3] || process.env.OIDC_PORT || 0);
if (!Number.isInteger(port) || port <= 0) {
  console.error('a port is required: provider.mjs ISSUER PORT (or OIDC_PORT)');
  process.exit(2);
}
const issuer = process.argv[2] || process.env.OIDC_ISSUER || `http://127.0.0.1:${port}`;

const clientIn = JSON.parse(process.env.OIDC_CLIENT || '{}');
if (!clientIn.client_id || !Array.isArray(clientIn.redirect_uris)) {
  console.error('OIDC_CLIENT must be JSON with at least client_id and redirect_uris');
  process.exit(2);
}
const client = {
  grant_types: ['authorization_code'],
  response_types: ['code'],
  ...clientIn,
};
if (client.client_secret == null) {
  delete client.client_secret;
  client.token_endpoint_auth_method = client.token_endpoint_auth_method || 'none';
}
if (client.backchannel_logout_uri && client.backchannel_logout_session_required === undefined) {
  client.backchannel_logout_session_required = true;
}

function groupsOf(login) {
  if (login === 'boss') return ['ops-admins', 'eng'];
  if (login.startsWith('nogroups')) return [];
  return ['eng'];
}

function claimsOf(login) {
  return {
    sub: login,
    preferred_username: login,
    name: `User ${login}`,
    email: login.startsWith('other') ? `${login}@other.org` : `${login}@example.com`,
    email_verified: !login.startsWith('unverified'),
    groups: groupsOf(login),
  };
}

// A signing key of this run's own (RS256), so two providers never share one.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256' };

const configuration = {
  clients: [client],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return claimsOf(id);
      },
    };
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  // The scopes' claims go in the ID token itself: the RP need not call userinfo.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { methods: ['S256'], required: () => true },
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
};

const options = JSON.parse(process.env.OIDC_OPTIONS || '{}');
for (const [k, v] of Object.entries(options)) {
  if (k === 'features') {
    configuration.features = { ...configuration.features, ...v };
  } else {
    configuration[k] = v;
  }
}

const provider = new Provider(issuer, configuration);

const who = (client, accountId, sid) => `client=${client?.clientId} sub=${accountId} sid=${sid}`;
provider.on('backchannel.success', (ctx, client, accountId, sid) => {
  console.log(`BACKCHANNEL ok ${who(client, accountId, sid)}`);
});
provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
  console.log(`BACKCHANNEL error ${who(client, accountId, sid)} ${err?.message}`);
});
for (const ev of ['server_error', 'authorization.error', 'grant.error', 'end_session.error',
  'interaction.error', 'userinfo.error', 'jwks.error', 'discovery.error']) {
  provider.on(ev, (ctx, err) => {
    console.log(`EVENT ${ev} ${ctx?.method} ${ctx?.path}: ${err?.name} ${err?.message} ${err?.error_description ?? ''}`);
  });
}
for (const ev of ['authorization.success', 'grant.success', 'end_session.success']) {
  provider.on(ev, (ctx) => console.log(`EVENT ${ev} ${ctx?.method} ${ctx?.path}`));
}

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
server.on('error', (err) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});

function stop(sig) {
  console.log(`stopping (${sig})`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
