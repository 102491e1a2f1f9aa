//! One operation of a history.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::Text;
use crate::value::Value;

/// Whether an op is an invocation or which way it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown: it may or may not have happened, at any time after its invocation.
    Info,
}

impl OpType {
    pub fn parse(s: &str) -> Option<OpType> {
        Some(match s {
            "invoke" => OpType::Invoke,
            "ok" => OpType::Ok,
            "fail" => OpType::Fail,
            "info" => OpType::Info,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }
}

pub(crate) const UNSPECIFIED_PROCESS: u64 = u64::MAX;

/// Who performed an op: a numbered client process, the nemesis, or another named actor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(u64),
    Nemesis,
    Named(Text),
}

/// What an op without a function does.
pub const DEFAULT_F: &str = "txn";

fn default_f() -> Text {
    Text::new(DEFAULT_F)
}

fn f_or_txn<'de, D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
    Ok(Option::<Text>::deserialize(d)?.unwrap_or_else(default_f))
}

impl Process {
    /// A stand-in for an op that names no process; a history gives each
    /// such op a fresh client process of its own (as Elle does).
    pub fn unspecified() -> Process {
        Process::Client(UNSPECIFIED_PROCESS)
    }

    pub fn from_name(s: &str) -> Process {
        match s {
            "nemesis" => Process::Nemesis,
            s => match s.parse::<u64>() {
                Ok(n) => Process::Client(n),
                Err(_) => Process::Named(Text::new(s)),
            },
        }
    }

    pub fn is_client(&self) -> bool {
        matches!(self, Process::Client(_))
    }

    pub fn client_id(&self) -> Option<u64> {
        match self {
            Process::Client(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(n) => write!(f, "{n}"),
            Process::Nemesis => f.write_str("nemesis"),
            Process::Named(s) => f.write_str(s),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(n) => s.serialize_u64(*n),
            Process::Nemesis => s.serialize_str("nemesis"),
            Process::Named(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Process, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Process;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a process number or name")
            }
            fn visit_u64<E>(self, n: u64) -> Result<Process, E> {
                Ok(Process::Client(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Process, E> {
                u64::try_from(n)
                    .map(Process::Client)
                    .map_err(|_| E::custom(format!("negative process {n}")))
            }
            fn visit_str<E>(self, s: &str) -> Result<Process, E> {
                Ok(Process::from_name(s))
            }
        }
        d.deserialize_any(V)
    }
}

/// An operation: an invocation, or the completion of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    #[serde(default)]
    pub index: u64,
    /// Nanoseconds since the start of the test, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    /// Missing in completion-only histories: each such op becomes a process of its own.
    #[serde(default = "Process::unspecified")]
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The function: read, write, cas, txn, add, ... Elle's transactional
    /// histories leave it out (or null): it is then `txn`.
    #[serde(default = "default_f", deserialize_with = "f_or_txn")]
    pub f: Text,
    #[serde(default)]
    pub value: Value,
    /// The key, for workloads over independent keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// Why the op failed or is indeterminate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// The node the client talked to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Text>,
}

impl Op {
    pub fn new(process: Process, kind: OpType, f: &str, value: Value) -> Op {
        Op {
            index: 0,
            time: None,
            process,
            kind,
            f: Text::new(f),
            value,
            key: None,
            error: None,
            node: None,
        }
    }

    pub fn is_invoke(&self) -> bool {
        self.kind == OpType::Invoke
    }
    pub fn is_ok(&self) -> bool {
        self.kind == OpType::Ok
    }
    pub fn is_fail(&self) -> bool {
        self.kind == OpType::Fail
    }
    pub fn is_info(&self) -> bool {
        self.kind == OpType::Info
    }
    pub fn is_client(&self) -> bool {
        self.process.is_client()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.process, self.kind.as_str(), self.f)?;
        if let Some(k) = &self.key {
            write!(f, " key={k}")?;
        }
        write!(f, " {}", self.value)?;
        if let Some(e) = &self.error {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}
