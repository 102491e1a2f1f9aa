//! PostgreSQL (Debian's `postgresql`, 15): one server, `list-append` and
//! `rw-register` as SQL transactions at a chosen isolation level.
//! Serialization failures and deadlocks are certain failures (`fail`).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use splitbrain_generators::Invocation;
use splitbrain_history::Value;
use splitbrain_nemesis::shape::Node;
use splitbrain_nemesis::Ability;
use splitbrain_workloads::WorkloadKind;
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};

use super::{list_value, parse_txn, txn_value, unsupported_workload, Db, DbOptions, Mop};
use crate::env::docker::FAKETIME_ENV;
use crate::env::{Addresses, NodeCommand, NodeImage};
use crate::interpreter::{Client, ClientFactory, Completion};

pub const WORKLOADS: [WorkloadKind; 2] = [WorkloadKind::ListAppend, WorkloadKind::RwRegister];

pub struct Postgres {
    workload: WorkloadKind,
    isolation: IsolationLevel,
    isolation_name: &'static str,
    /// What the user asked for with --nodes, when it was not 1.
    nodes_asked: usize,
}

impl Postgres {
    pub fn new(t: &DbOptions) -> Result<Postgres, String> {
        if !WORKLOADS.contains(&t.workload) {
            return Err(unsupported_workload("postgres", t.workload, &WORKLOADS));
        }
        // Without --isolation, PostgreSQL's own default.
        let (isolation, isolation_name) = match t.isolation.as_deref().unwrap_or("read-committed") {
            "read-committed" => (IsolationLevel::ReadCommitted, "read-committed"),
            "repeatable-read" => (IsolationLevel::RepeatableRead, "repeatable-read"),
            "serializable" => (IsolationLevel::Serializable, "serializable"),
            other => {
                return Err(format!(
                    "--isolation {other}: postgres has read-committed, repeatable-read and serializable"
                ))
            }
        };
        Ok(Postgres {
            workload: t.workload,
            isolation,
            isolation_name,
            nodes_asked: t.nodes,
        })
    }
}

const NODE: &str = "n1";

/// Debian's PostgreSQL, under libfaketime for clock faults.
pub const IMAGE: NodeImage = NodeImage {
    recipe: "postgres",
    packages: &["postgresql"],
    with_harness: false,
    process_env: FAKETIME_ENV,
};

#[async_trait]
impl Db for Postgres {
    fn describe(&self) -> String {
        format!(
            "PostgreSQL 15 (Debian postgresql), one server in Docker, transactions at {}{}",
            self.isolation_name,
            if self.nodes_asked != 1 {
                format!(
                    " (--nodes {} ignored: isolation is tested on a single primary)",
                    self.nodes_asked
                )
            } else {
                String::new()
            }
        )
    }

    fn nodes(&self) -> Vec<Node> {
        vec![NODE.to_string()]
    }

    fn lacks(&self, ability: Ability) -> Option<String> {
        matches!(ability, Ability::Partition | Ability::Loss).then(|| {
            "postgres runs as a single server here: there are no links between nodes to cut or degrade".to_string()
        })
    }

    fn ports(&self) -> Vec<u16> {
        vec![5432]
    }

    fn node_command(&self, _node: &str, _addrs: &Addresses, _harness: &str) -> NodeCommand {
        NodeCommand::shell({
            // Our own data directory, made on first start and reused after a
            // kill; trust authentication, since the network is the test's own.
            r#"set -e
BIN=$(ls -d /usr/lib/postgresql/*/bin | head -n 1)
D=/var/lib/postgresql/splitbrain
if [ ! -f "$D/PG_VERSION" ]; then
  mkdir -p "$D" && chown postgres:postgres "$D"
  runuser -u postgres -- "$BIN/initdb" -D "$D" -A trust -U postgres >/dev/null
  echo "listen_addresses = '*'" >> "$D/postgresql.conf"
  echo "max_connections = 200" >> "$D/postgresql.conf"
  # Deadlocks between concurrent upserts are found well within an op's timeout.
  echo "deadlock_timeout = '100ms'" >> "$D/postgresql.conf"
  echo "host all all 0.0.0.0/0 trust" >> "$D/pg_hba.conf"
fi
mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql
exec runuser -u postgres -- "$BIN/postgres" -D "$D"
"#
            .to_string()
        })
    }

    async fn ready(&self, addrs: &Addresses) -> Result<(), String> {
        let ips = &addrs.ips;
        let ip = ips.get(NODE).ok_or("no address for n1")?;
        let (client, conn) = connect(ip, Duration::from_secs(2)).await?;
        let task = tokio::spawn(conn);
        let r = client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        drop(client);
        task.abort();
        r
    }

    async fn primaries(&self, _addrs: &Addresses) -> Vec<Node> {
        vec![NODE.to_string()]
    }

    fn clients(
        &self,
        addrs: &Addresses,
        op_timeout: Duration,
        _workload: &splitbrain_workloads::WorkloadOptions,
    ) -> Arc<dyn ClientFactory> {
        let ips = &addrs.ips;
        Arc::new(PgClients {
            ip: ips.get(NODE).copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
            workload: self.workload,
            isolation: self.isolation,
            timeout: op_timeout,
        })
    }
}

type Conn = tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>;

async fn connect(
    ip: &Ipv4Addr,
    timeout: Duration,
) -> Result<(tokio_postgres::Client, Conn), String> {
    tokio_postgres::Config::new()
        .host(ip.to_string())
        .port(5432)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(timeout)
        .connect(NoTls)
        .await
        .map_err(|e| e.to_string())
}

struct PgClients {
    ip: Ipv4Addr,
    workload: WorkloadKind,
    isolation: IsolationLevel,
    timeout: Duration,
}

impl ClientFactory for PgClients {
    fn open(&self, _process: u64) -> Box<dyn Client> {
        Box::new(PgClient {
            ip: self.ip,
            workload: self.workload,
            isolation: self.isolation,
            timeout: self.timeout,
            conn: None,
        })
    }
}

/// A connection and the task that drives it (aborted with the client).
struct Live {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct PgClient {
    ip: Ipv4Addr,
    workload: WorkloadKind,
    isolation: IsolationLevel,
    timeout: Duration,
    conn: Option<Live>,
}

impl PgClient {
    fn table(&self) -> &'static str {
        if self.workload == WorkloadKind::ListAppend {
            "sb_append"
        } else {
            "sb_register"
        }
    }

    async fn live(&mut self) -> Result<&mut tokio_postgres::Client, String> {
        if self.conn.as_ref().is_some_and(|l| l.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let (client, conn) = connect(&self.ip, self.timeout).await?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            self.conn = Some(Live { client, task });
        }
        Ok(&mut self.conn.as_mut().expect("just connected").client)
    }
}

/// Whether a database error proves the transaction did not commit.
fn aborted(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn error_name(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => "serialization-failure".into(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => "deadlock".into(),
        Some(c) => format!("sqlstate-{}", c.code()),
        None => "connection".into(),
    }
}

fn failure(inv: &Invocation, e: &tokio_postgres::Error, certain: bool) -> Completion {
    let name = error_name(e);
    let c = if certain {
        Completion::fail(inv.value.clone(), &name)
    } else {
        Completion::info(inv.value.clone(), &name)
    };
    let detail = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    Completion {
        error: Some(Value::Str(format!("{name}: {detail}").into())),
        ..c
    }
}

#[async_trait]
impl Client for PgClient {
    async fn setup(&mut self) -> Result<(), String> {
        let ddl = if self.workload == WorkloadKind::ListAppend {
            "CREATE TABLE IF NOT EXISTS sb_append (k BIGINT PRIMARY KEY, v BIGINT[] NOT NULL)"
        } else {
            "CREATE TABLE IF NOT EXISTS sb_register (k BIGINT PRIMARY KEY, v BIGINT NOT NULL)"
        };
        let c = self.live().await?;
        c.batch_execute(ddl).await.map_err(|e| e.to_string())
    }

    async fn invoke(&mut self, inv: &Invocation) -> Completion {
        let mops = match parse_txn(&inv.value) {
            Ok(m) => m,
            Err(why) => return Completion::fail(inv.value.clone(), &why),
        };
        let (table, isolation, workload) = (self.table(), self.isolation, self.workload);
        let append = self.workload == WorkloadKind::ListAppend;
        let client = match self.live().await {
            Ok(c) => c,
            Err(why) => {
                return Completion {
                    error: Some(Value::Str(why.into())),
                    ..Completion::fail(inv.value.clone(), "connect")
                }
            }
        };
        let tx = match client
            .build_transaction()
            .isolation_level(isolation)
            .start()
            .await
        {
            Ok(tx) => tx,
            Err(e) => return failure(inv, &e, true),
        };
        let read = format!("SELECT v FROM {table} WHERE k = $1");
        let write = if append {
            format!(
                "INSERT INTO {table} AS t (k, v) VALUES ($1, ARRAY[$2::BIGINT]) \
                 ON CONFLICT (k) DO UPDATE SET v = t.v || $2::BIGINT"
            )
        } else {
            format!(
                "INSERT INTO {table} AS t (k, v) VALUES ($1, $2) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            )
        };
        let mut reads = Vec::new();
        for m in &mops {
            // Any error before COMMIT aborts the transaction (dropping it rolls back).
            let r = match m {
                Mop::Read(k) => tx.query_opt(&read, &[k]).await.map(|row| {
                    reads.push(match (append, row) {
                        (true, Some(row)) => list_value(&row.get::<_, Vec<i64>>(0)),
                        (true, None) => list_value(&[]),
                        (false, Some(row)) => Value::Int(row.get::<_, i64>(0)),
                        (false, None) => Value::Nil,
                    });
                }),
                Mop::Append(k, v) if append => tx.execute(&write, &[k, v]).await.map(|_| ()),
                Mop::Write(k, v) if !append => tx.execute(&write, &[k, v]).await.map(|_| ()),
                m => {
                    return Completion::fail(
                        inv.value.clone(),
                        &format!("{m:?} does not belong in a {workload} txn"),
                    )
                }
            };
            if let Err(e) = r {
                return failure(inv, &e, true);
            }
        }
        let read_only = mops.iter().all(|m| matches!(m, Mop::Read(_)));
        match tx.commit().await {
            Ok(()) => Completion::ok(txn_value(&inv.value, reads)),
            // A lost connection at COMMIT leaves the outcome unknown.
            Err(e) => failure(inv, &e, read_only || aborted(&e)),
        }
    }
}
