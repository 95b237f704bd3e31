//! How the Redis store reaches Redis, behind one `ConnectionLike`: one primary (an
//! auto-reconnecting multiplexed connection), a primary found through Sentinel and followed
//! over failovers, or a Cluster (commands routed by key slot). TLS (`rediss://`, a CA file, a
//! client certificate) and a password file apply to every data connection.

use crate::config::{RedisSettings, RedisTopology};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, TlsMode, Value,
};
use std::sync::Arc;
use std::time::Duration;

/// A connection to whichever topology the config names; cheap to clone (one shared
/// multiplexed connection underneath).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Sentinel(SentinelConn),
    Cluster(ClusterConn),
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The TLS material of the settings, for the redis crate.
fn certificates(s: &RedisSettings) -> TlsCertificates {
    TlsCertificates {
        client_tls: s.tls_client.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: s.tls_ca.clone(),
    }
}

/// A client for one node URL with the settings' password and TLS material.
fn client_for(url: &str, s: &RedisSettings) -> RedisResult<Client> {
    let mut info = url.into_connection_info()?;
    if let Some(p) = &s.password {
        let settings = info.redis_settings().clone().set_password(p.clone());
        info = info.set_redis_settings(settings);
    }
    if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        Client::build_with_tls(info, certificates(s))
    } else {
        Client::open(info)
    }
}

/// Builds the connection (lazily: nothing is dialed until the first command, so the gateway
/// starts, not ready, while Redis is down).
pub fn connect(s: &RedisSettings, timeout: Duration) -> RedisResult<(Conn, Subscriber)> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    match &s.topology {
        RedisTopology::Single { url } => {
            let client = client_for(url, s)?;
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
            Ok((Conn::Single(conn), Subscriber::Fixed(Box::new(client))))
        }
        RedisTopology::Sentinel { master_name, nodes } => {
            let conn = SentinelConn::new(master_name, nodes, s, config)?;
            Ok((Conn::Sentinel(conn.clone()), Subscriber::Sentinel(conn)))
        }
        RedisTopology::Cluster { nodes } => {
            let client = cluster_client(nodes, s, timeout)?;
            Ok((Conn::Cluster(ClusterConn::new(client)), Subscriber::None))
        }
    }
}

fn cluster_client(
    nodes: &[String],
    s: &RedisSettings,
    timeout: Duration,
) -> RedisResult<ClusterClient> {
    let mut b = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(1);
    if let Some(p) = &s.password {
        b = b.password(p.clone());
    }
    if nodes.iter().any(|n| n.starts_with("rediss://")) {
        b = b.tls(TlsMode::Secure).certs(certificates(s));
    }
    b.build()
}

/// A Cluster, connected on first use (`get_async_connection` needs a node to answer, which a
/// gateway starting before its Redis cannot wait for); the connection then follows slot moves
/// and reconnects by itself.
#[derive(Clone)]
pub struct ClusterConn(Arc<ClusterInner>);

struct ClusterInner {
    client: ClusterClient,
    current: ArcSwapOption<ClusterConnection>,
    connecting: tokio::sync::Mutex<()>,
}

impl ClusterConn {
    fn new(client: ClusterClient) -> ClusterConn {
        ClusterConn(Arc::new(ClusterInner {
            client,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }))
    }

    async fn connection(&self) -> RedisResult<ClusterConnection> {
        if let Some(c) = self.0.current.load_full() {
            return Ok((*c).clone());
        }
        let _one = self.0.connecting.lock().await;
        if let Some(c) = self.0.current.load_full() {
            return Ok((*c).clone());
        }
        let conn = self.0.client.get_async_connection().await?;
        self.0.current.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.connection().await?.req_packed_command(cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.connection()
                .await?
                .req_packed_commands(pipeline, offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Where the mirror subscribes to the revocation channel: the one primary, or the primary
/// Sentinel names now; a Cluster has no single channel (the config refuses the mirror there).
#[derive(Clone)]
pub enum Subscriber {
    Fixed(Box<Client>),
    Sentinel(SentinelConn),
    None,
}

impl Subscriber {
    pub async fn client(&self) -> RedisResult<Client> {
        match self {
            Subscriber::Fixed(c) => Ok((**c).clone()),
            Subscriber::Sentinel(s) => s.master_client().await,
            Subscriber::None => Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no single primary to subscribe to",
            ))),
        }
    }
}

/// The primary Sentinel names, followed over failovers: a connection error or a READONLY
/// answer (the old primary, now a replica) drops the current connection, and the next command
/// asks the sentinels again.
#[derive(Clone)]
pub struct SentinelConn(Arc<SentinelInner>);

struct SentinelInner {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: ArcSwapOption<ConnectionManager>,
    config: ConnectionManagerConfig,
}

impl SentinelConn {
    fn new(
        master_name: &str,
        nodes: &[String],
        s: &RedisSettings,
        config: ConnectionManagerConfig,
    ) -> RedisResult<SentinelConn> {
        let addrs = nodes
            .iter()
            .map(|n| n.as_str().into_connection_info().map(|i| i.addr().clone()))
            .collect::<RedisResult<Vec<_>>>()?;
        let tls = nodes.iter().any(|n| n.starts_with("rediss://")) || s.tls_ca.is_some();
        let mut b = SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)?;
        if let Some(p) = &s.password {
            b = b.set_client_to_redis_password(p);
        }
        if tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certificates(s));
            if nodes.iter().any(|n| n.starts_with("rediss://")) {
                b = b
                    .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                    .set_client_to_sentinel_certificates(certificates(s));
            }
        }
        Ok(SentinelConn(Arc::new(SentinelInner {
            sentinel: tokio::sync::Mutex::new(b.build()?),
            current: ArcSwapOption::empty(),
            config,
        })))
    }

    /// A client for the primary the sentinels name now.
    async fn master_client(&self) -> RedisResult<Client> {
        self.0.sentinel.lock().await.async_get_client().await
    }

    /// The current primary's connection, asking the sentinels when there is none.
    async fn connection(&self) -> RedisResult<ConnectionManager> {
        if let Some(c) = self.0.current.load_full() {
            return Ok((*c).clone());
        }
        let mut sentinel = self.0.sentinel.lock().await;
        // Another caller may have found it while this one waited.
        if let Some(c) = self.0.current.load_full() {
            return Ok((*c).clone());
        }
        let client = sentinel.async_get_client().await?;
        let conn = ConnectionManager::new_with_config(client, self.0.config.clone()).await?;
        tracing::info!("redis sentinel: connected to the current primary");
        self.0.current.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// After this error, ask the sentinels again (the primary may have moved).
    fn check(&self, e: &RedisError) {
        let moved = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if moved && self.0.current.swap(None).is_some() {
            tracing::warn!(error = %e, "redis sentinel: primary lost; asking the sentinels again");
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut c = self.connection().await?;
            let r = c.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.check(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut c = self.connection().await?;
            let r = c.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                self.check(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
