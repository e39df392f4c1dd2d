//! The market's transport: a NATS connection with JetStream, and the
//! streams and key-value buckets the market lives in. Everything is created
//! on first use with the names and limits below (docs/market.md lists them
//! for operators):
//!
//! | name          | kind   | subjects / keys                              | kept            |
//! |---------------|--------|----------------------------------------------|-----------------|
//! | `CMM_TASKS`   | stream | `cmm.task.<id>`, `cmm.bid.<id>`, `cmm.status.<id>` | 24 h      |
//! | `CMM_RESULTS` | stream | `cmm.result.<id>` (parts, then the result)    | 7 days          |
//! | `CMM_LEDGER`  | stream | `cmm.ledger.<kind>.<id>`, `cmm.ledger.checkpoint` | until a checkpoint purges it |
//! | `cmm-checkpoints` | object store | ledger state digest → the state's JSON | forever |
//! | `cmm-offers`  | KV     | provider node id → signed offer               | `market.offerTtlSecs` |
//! | `cmm-claims`  | KV     | task id → signed claim (create-only)          | 24 h            |
//!
//! Every publish carries a `Nats-Msg-Id`, so a publish retried after a lost
//! acknowledgement (a server failing over) is stored once. Only bytes go
//! through here: signing and checking is `message`'s job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context, kv, object_store, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::MarketError;

pub const TASKS_STREAM: &str = "CMM_TASKS";
pub const RESULTS_STREAM: &str = "CMM_RESULTS";
pub const LEDGER_STREAM: &str = "CMM_LEDGER";
pub const OFFERS_BUCKET: &str = "cmm-offers";
pub const CLAIMS_BUCKET: &str = "cmm-claims";
pub const CHECKPOINTS_STORE: &str = "cmm-checkpoints";
/// Where command tasks' workspaces travel, both ways; an object left
/// behind expires after a day.
pub const WORKSPACES_STORE: &str = "cmm-workspaces";
/// A workspace object's chunk: well inside a server's default 1 MiB
/// message, and few enough messages that 100 MiB is not 800 round trips.
const WORKSPACE_CHUNK_BYTES: usize = 512 * 1024;
/// Where issuers' checkpoints are stored in the ledger stream: one subject,
/// so the latest is one lookup.
pub const CHECKPOINT_SUBJECT: &str = "cmm.ledger.checkpoint";

/// The largest message the streams take; a prompt or result must fit in
/// one (with its envelope and signature).
pub const MAX_MESSAGE_BYTES: i32 = 1 << 20;

const DAY: Duration = Duration::from_secs(24 * 3600);
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Attempts for a request while the servers fail over (a new stream leader
/// can take several seconds to elect), and the pause between them.
const ATTEMPTS: u32 = 60;
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Answers of "no responders" to a JetStream request before concluding
/// the server runs without JetStream. A server with JetStream always
/// answers its API, even while electing a leader; the few extra tries
/// (a second in all) only cover one still starting up.
const UNANSWERED_ATTEMPTS: u32 = 4;

/// How long to wait for a JetStream API answer before asking again. While
/// a cluster member is down, nats-server 2.9 and 2.10 still route some API
/// requests to it, and those go unanswered (nats-io/nats-server#5498):
/// a short wait turns each lost request into a quick retry. Every request
/// here is safe to repeat: publishes carry their id, a claim recognises
/// its own bytes, and a duplicate ordered consumer lapses on its own.
const API_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest one attempt at listing a bucket's keys may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the servers.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub urls: Vec<String>,
    pub auth: Auth,
    pub tls: Tls,
    /// Copies of every stream and bucket (1 for a single server).
    pub replicas: usize,
    pub offer_ttl: Duration,
}

#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    NkeySeed(String),
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A message as stored in a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    /// The server's time for it (Unix ms): what replay windows compare to.
    pub at: i64,
    pub subject: String,
    pub bytes: Bytes,
}

/// How a claim went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Ours is the one claim on the task.
    Won,
    /// Another claim was there first; these are its bytes.
    Lost(Bytes),
}

/// A connected market.
#[derive(Clone)]
pub struct Transport {
    js: jetstream::Context,
    offers: kv::Store,
    claims: kv::Store,
    urls: Vec<String>,
    replicas: usize,
}

impl Transport {
    /// Connects and makes sure the streams and buckets exist.
    pub async fn connect(conn: &Connection) -> Result<Transport, MarketError> {
        if conn.urls.is_empty() {
            return Err(MarketError::NotConfigured);
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("claude-max-market")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)));
        options = match &conn.auth {
            Auth::None => options,
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => options.token(token.clone()),
            Auth::NkeySeed(seed) => options.nkey(seed.clone()),
        };
        if let Some(ca) = &conn.tls.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&conn.tls.cert_file, &conn.tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client =
            options
                .connect(conn.urls.as_slice())
                .await
                .map_err(|e| MarketError::Connect {
                    urls: conn.urls.join(","),
                    detail: e.to_string(),
                })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(API_TIMEOUT);
        let replicas = conn.replicas.max(1);
        for (name, subjects, max_age) in [
            (
                TASKS_STREAM,
                vec!["cmm.task.*", "cmm.bid.*", "cmm.status.*"],
                DAY,
            ),
            (RESULTS_STREAM, vec!["cmm.result.*"], 7 * DAY),
            (LEDGER_STREAM, vec!["cmm.ledger.>"], Duration::ZERO),
        ] {
            let config = stream::Config {
                name: name.to_owned(),
                subjects: subjects.into_iter().map(String::from).collect(),
                max_age,
                max_message_size: MAX_MESSAGE_BYTES,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            };
            ensure_stream(&js, config, &conn.urls).await?;
        }
        let offers = bucket(&js, &conn.urls, OFFERS_BUCKET, conn.offer_ttl, replicas).await?;
        let claims = bucket(&js, &conn.urls, CLAIMS_BUCKET, DAY, replicas).await?;
        Ok(Transport {
            js,
            offers,
            claims,
            urls: conn.urls.clone(),
            replicas,
        })
    }

    /// Publishes `bytes` on `subject`, stored once however often a lost
    /// acknowledgement makes us retry. Returns the stream sequence.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        bytes: Vec<u8>,
    ) -> Result<u64, MarketError> {
        let payload = Bytes::from(bytes);
        let ack = retry(|| async {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id);
            self.js
                .publish_with_headers(subject.to_owned(), headers, payload.clone())
                .await?
                .await
        })
        .await
        .map_err(|detail| MarketError::Publish {
            subject: subject.to_owned(),
            detail,
        })?;
        Ok(ack.sequence)
    }

    /// Publishes `bytes` on `subject` only if the last entry in `stream` is
    /// still the one at `last`: `Ok(None)` when another landed first.
    pub async fn publish_after(
        &self,
        subject: &str,
        msg_id: &str,
        bytes: Vec<u8>,
        last: u64,
    ) -> Result<Option<u64>, MarketError> {
        let payload = Bytes::from(bytes);
        let ack = retry_settled(
            || async {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id);
                headers.insert("Nats-Expected-Last-Sequence", last.to_string().as_str());
                self.js
                    .publish_with_headers(subject.to_owned(), headers, payload.clone())
                    .await?
                    .await
            },
            |e: &context::PublishError| {
                matches!(e.kind(), context::PublishErrorKind::WrongLastSequence)
            },
        )
        .await
        .map_err(|detail| MarketError::Publish {
            subject: subject.to_owned(),
            detail,
        })?;
        Ok(ack.map(|ack| ack.sequence))
    }

    /// The last message stored on exactly `subject` in `stream`, if any.
    pub async fn last_on(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<Stored>, MarketError> {
        let read = |detail: String| MarketError::Read {
            what: format!("the last {subject} in {stream}"),
            detail,
        };
        let handle = retry(|| self.js.get_stream_no_info(stream))
            .await
            .map_err(read)?;
        let last = retry_settled(
            || handle.get_last_raw_message_by_subject(subject),
            |e: &stream::LastRawMessageError| {
                matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound)
            },
        )
        .await
        .map_err(read)?;
        Ok(last.map(|m| Stored {
            seq: m.sequence,
            at: unix_ms(m.time),
            subject: m.subject.to_string(),
            bytes: m.payload,
        }))
    }

    /// Removes every entry of `stream` before `keep_from`; returns how many.
    pub async fn purge_before(&self, stream: &str, keep_from: u64) -> Result<u64, MarketError> {
        retry(|| async {
            let handle = self
                .js
                .get_stream_no_info(stream)
                .await
                .map_err(|e| e.to_string())?;
            let purged = handle
                .purge()
                .sequence(keep_from)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(purged.purged)
        })
        .await
        .map_err(|detail| MarketError::Publish {
            subject: format!("a purge of {stream}"),
            detail,
        })
    }

    /// Stores a ledger state under `name` (its digest), once.
    pub async fn put_state(&self, name: &str, bytes: Vec<u8>) -> Result<(), MarketError> {
        let store = self.object_store(CHECKPOINTS_STORE, Duration::ZERO).await?;
        retry(|| async {
            let mut reader = bytes.as_slice();
            store.put(name, &mut reader).await.map(|_| ())
        })
        .await
        .map_err(|detail| MarketError::Publish {
            subject: format!("{CHECKPOINTS_STORE}/{name}"),
            detail,
        })
    }

    /// The ledger state stored under `name`, if there is one.
    pub async fn get_state(&self, name: &str) -> Result<Option<Vec<u8>>, MarketError> {
        use tokio::io::AsyncReadExt as _;
        let store = self.object_store(CHECKPOINTS_STORE, Duration::ZERO).await?;
        let read = |detail: String| MarketError::Read {
            what: format!("{CHECKPOINTS_STORE}/{name}"),
            detail,
        };
        let found = retry_settled(
            || store.get(name),
            |e: &object_store::GetError| matches!(e.kind(), object_store::GetErrorKind::NotFound),
        )
        .await
        .map_err(read)?;
        let Some(mut object) = found else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| read(e.to_string()))?;
        Ok(Some(bytes))
    }

    /// Stores the file at `path` as object `name` of the workspaces store.
    /// An attempt that fails starts again from the file's beginning.
    pub async fn put_workspace(&self, name: &str, path: &Path) -> Result<(), MarketError> {
        let store = self.object_store(WORKSPACES_STORE, DAY).await?;
        retry(|| async {
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| e.to_string())?;
            let meta = object_store::ObjectMetadata {
                name: name.to_owned(),
                chunk_size: Some(WORKSPACE_CHUNK_BYTES),
                ..Default::default()
            };
            store
                .put(meta, &mut file)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|detail| MarketError::Publish {
            subject: format!("{WORKSPACES_STORE}/{name}"),
            detail,
        })
    }

    /// Fetches object `name` of the workspaces store into a new file at
    /// `path`, refusing an object of more than `max_bytes` before reading
    /// it. `None` when there is no such object.
    pub async fn get_workspace(
        &self,
        name: &str,
        max_bytes: u64,
        path: &Path,
    ) -> Result<Option<u64>, MarketError> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let store = self.object_store(WORKSPACES_STORE, DAY).await?;
        let read = |detail: String| MarketError::Read {
            what: format!("{WORKSPACES_STORE}/{name}"),
            detail,
        };
        let found = retry_settled(
            || store.info(name),
            |e: &object_store::InfoError| matches!(e.kind(), object_store::InfoErrorKind::NotFound),
        )
        .await
        .map_err(read)?;
        // A removed object leaves its description behind, marked deleted.
        let Some(info) = found.filter(|info| !info.deleted) else {
            return Ok(None);
        };
        let too_large = |size: u64| {
            read(format!(
                "it holds {size} bytes, more than the {max_bytes} this node takes"
            ))
        };
        if info.size as u64 > max_bytes {
            return Err(too_large(info.size as u64));
        }
        let object = retry(|| store.get(name)).await.map_err(read)?;
        // Read once: a copy that fails (or whose digest is wrong at the
        // end) would fail again, and each attempt reads the whole object.
        let copy = async {
            let mut file = tokio::fs::File::create(path)
                .await
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            // The size in its description is the sender's word: the copy
            // stops one byte past the cap whatever the chunks hold.
            let copied = tokio::io::copy(&mut object.take(max_bytes + 1), &mut file)
                .await
                .map_err(|e| e.to_string())?;
            // A scratch copy, read once and removed: flushed, never synced.
            file.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(copied)
        };
        let copied = copy.await.map_err(read)?;
        if copied > max_bytes {
            return Err(too_large(copied));
        }
        Ok(Some(copied))
    }

    /// Removes object `name` of the workspaces store, if it is there.
    pub async fn delete_workspace(&self, name: &str) -> Result<(), MarketError> {
        let store = self.object_store(WORKSPACES_STORE, DAY).await?;
        retry_settled(
            || store.delete(name),
            |e: &object_store::DeleteError| {
                matches!(e.kind(), object_store::DeleteErrorKind::NotFound)
            },
        )
        .await
        .map(drop)
        .map_err(|detail| MarketError::Publish {
            subject: format!("{WORKSPACES_STORE}/{name}"),
            detail,
        })
    }

    /// Object store `name`, made on first use by hand like the buckets (see
    /// `bucket`); its objects expire after `max_age` (never for zero).
    async fn object_store(
        &self,
        name: &str,
        max_age: Duration,
    ) -> Result<object_store::ObjectStore, MarketError> {
        let config = stream::Config {
            name: format!("OBJ_{name}"),
            subjects: vec![format!("$O.{name}.C.>"), format!("$O.{name}.M.>")],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_age,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            allow_direct: true,
            ..Default::default()
        };
        ensure_stream(&self.js, config, &self.urls).await?;
        retry(|| self.js.get_object_store(name))
            .await
            .map_err(|detail| MarketError::Setup {
                what: format!("object store {name}"),
                detail,
            })
    }

    /// Puts this node's offer (refreshing its time to live).
    pub async fn put_offer(&self, node: &str, bytes: Vec<u8>) -> Result<(), MarketError> {
        let value = Bytes::from(bytes);
        retry(|| self.offers.put(node, value.clone()))
            .await
            .map(drop)
            .map_err(|detail| MarketError::Publish {
                subject: format!("{OFFERS_BUCKET}/{node}"),
                detail,
            })
    }

    /// Withdraws this node's offer.
    pub async fn withdraw_offer(&self, node: &str) -> Result<(), MarketError> {
        retry(|| self.offers.purge(node))
            .await
            .map_err(|detail| MarketError::Publish {
                subject: format!("{OFFERS_BUCKET}/{node}"),
                detail,
            })
    }

    /// Every live offer: (key, server time in Unix ms, bytes).
    pub async fn offers(&self) -> Result<Vec<(String, i64, Bytes)>, MarketError> {
        // Listing keys waits for the bucket's pending count to drain, and an
        // offer expiring (market.offerTtlSecs) mid-listing can leave it
        // waiting for a message that is gone: each attempt is bounded.
        retry(|| async {
            tokio::time::timeout(LIST_TIMEOUT, self.list_offers())
                .await
                .map_err(|_| format!("listing took over {LIST_TIMEOUT:?}"))?
        })
        .await
        .map_err(|detail| MarketError::Read {
            what: format!("the offers in {OFFERS_BUCKET}"),
            detail,
        })
    }

    /// One attempt at listing the offers.
    async fn list_offers(&self) -> Result<Vec<(String, i64, Bytes)>, String> {
        let mut keys = self.offers.keys().await.map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(|e| e.to_string())?);
        }
        let mut offers = Vec::new();
        for name in names {
            let entry = self
                .offers
                .entry(name.clone())
                .await
                .map_err(|e| e.to_string())?;
            if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
                offers.push((name, unix_ms(entry.created), entry.value));
            }
        }
        Ok(offers)
    }

    /// Claims `task`: the first create wins. A create whose acknowledgement
    /// was lost is retried; finding our own bytes there then means we won.
    pub async fn claim(&self, task: &str, bytes: Vec<u8>) -> Result<ClaimOutcome, MarketError> {
        let value = Bytes::from(bytes);
        let failed = |detail: String| MarketError::Publish {
            subject: format!("{CLAIMS_BUCKET}/{task}"),
            detail,
        };
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self.claims.create(task, value.clone()).await {
                Ok(_) => return Ok(ClaimOutcome::Won),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let held = self.claim_of(task).await?.map(|(_, bytes)| bytes);
                    return Ok(match held {
                        Some(held) if held == value => ClaimOutcome::Won,
                        Some(held) => ClaimOutcome::Lost(held),
                        None => ClaimOutcome::Lost(Bytes::new()),
                    });
                }
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        Err(failed(last))
    }

    /// The claim on `task`, if any: (server time in Unix ms, bytes).
    pub async fn claim_of(&self, task: &str) -> Result<Option<(i64, Bytes)>, MarketError> {
        let entry =
            retry(|| self.claims.entry(task))
                .await
                .map_err(|detail| MarketError::Read {
                    what: format!("the claim on task {task}"),
                    detail,
                })?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (unix_ms(e.created), e.value)))
    }

    /// Waits up to `wait` for a claim on `task`: (server time in Unix ms,
    /// bytes) of the claim, or `None` if nobody claimed it in time. The key
    /// is watched, so a claim is seen the moment it is stored rather than
    /// at the next of a series of reads.
    pub async fn await_claim(
        &self,
        task: &str,
        wait: Duration,
    ) -> Result<Option<(i64, Bytes)>, MarketError> {
        let read = |detail: String| MarketError::Read {
            what: format!("the claim on task {task}"),
            detail,
        };
        let mut watch = retry(|| self.claims.watch_with_history(task))
            .await
            .map_err(read)?;
        let claimed = async {
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| read(e.to_string()))?;
                if entry.operation == kv::Operation::Put {
                    return Ok(Some((unix_ms(entry.created), entry.value)));
                }
            }
            Err(read("the watch ended".into()))
        };
        match tokio::time::timeout(wait, claimed).await {
            Ok(found) => found,
            Err(_) => Ok(None),
        }
    }

    /// Everything stored on `filter` in `stream` from `from_seq` on, up to
    /// what the stream held when the read began. A read cut off by a server
    /// failing over starts again.
    pub async fn read(
        &self,
        stream: &str,
        filter: &str,
        from_seq: u64,
    ) -> Result<Vec<Stored>, MarketError> {
        retry(|| async {
            let consumer = self.ordered(stream, filter, Start::Seq(from_seq)).await?;
            let mut out = Vec::new();
            if consumer.cached_info().num_pending == 0 {
                return Ok(out);
            }
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            while let Some(message) = messages.next().await {
                let (stored, remaining) = stored(message.map_err(|e| e.to_string())?)?;
                out.push(stored);
                if remaining == 0 {
                    break;
                }
            }
            Ok::<_, String>(out)
        })
        .await
        .map_err(|detail| MarketError::Read {
            what: format!("{filter} in {stream}"),
            detail,
        })
    }

    /// A live feed of what is stored on `filter` in `stream`, starting at
    /// `start`. The feed survives server failover: it resumes after the
    /// last message it delivered.
    pub async fn watch(
        &self,
        stream: &str,
        filter: &str,
        start: Start,
    ) -> Result<impl futures_util::Stream<Item = Result<Stored, MarketError>> + use<>, MarketError>
    {
        let what = format!("{filter} in {stream}");
        let read = move |detail: String| MarketError::Read {
            what: what.clone(),
            detail,
        };
        let consumer = retry(|| self.ordered(stream, filter, start))
            .await
            .map_err(&read)?;
        let messages = consumer.messages().await.map_err(|e| read(e.to_string()))?;
        Ok(messages.map(move |m| {
            m.map_err(|e| e.to_string())
                .and_then(stored)
                .map(|(stored, _)| stored)
                .map_err(&read)
        }))
    }

    /// An ordered consumer of `filter` in `stream` from `start` (one
    /// attempt: callers retry).
    async fn ordered(
        &self,
        stream: &str,
        filter: &str,
        start: Start,
    ) -> Result<jetstream::consumer::Consumer<consumer::pull::OrderedConfig>, String> {
        let deliver_policy = match start {
            Start::Seq(seq) if seq > 1 => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq,
            },
            Start::Seq(_) => consumer::DeliverPolicy::All,
            Start::Since(ms) => consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(ms) * 1_000_000,
                )
                .map_err(|e| e.to_string())?,
            },
        };
        let handle = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?;
        handle
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
    }
}

/// A delivered message as stored, with how many more the consumer has
/// pending.
fn stored(message: jetstream::Message) -> Result<(Stored, u64), String> {
    let info = message.info().map_err(|e| e.to_string())?;
    let pending = info.pending;
    let stored = Stored {
        seq: info.stream_sequence,
        at: unix_ms(info.published),
        subject: message.subject.to_string(),
        bytes: message.payload.clone(),
    };
    Ok((stored, pending))
}

/// Where a feed starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// At this stream sequence (1: the beginning).
    Seq(u64),
    /// With messages stored since this time (Unix ms).
    Since(i64),
}

async fn bucket(
    js: &jetstream::Context,
    urls: &[String],
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, MarketError> {
    let setup = |detail: String| MarketError::Setup {
        what: format!("bucket {name}"),
        detail,
    };
    // The bucket's stream is made by hand, to the key-value conventions
    // (ADR-8), because the client's own `create_key_value` first asks for
    // account details in a form the 2.9 servers Debian ships do not send.
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        max_message_size: MAX_MESSAGE_BYTES,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window: DUPLICATE_WINDOW.min(max_age),
        ..Default::default()
    };
    ensure_stream(js, config, urls).await?;
    retry(|| js.get_key_value(name)).await.map_err(setup)
}

/// Gets or creates a stream, retrying while a leader is elected, but not
/// while nothing answers the JetStream API at all: that is a server
/// running without JetStream, and waiting out every attempt would only
/// keep the user in silence before the same error.
async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    urls: &[String],
) -> Result<(), MarketError> {
    let mut unanswered = 0;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == context::CreateStreamErrorKind::JetStreamUnavailable => {
                unanswered += 1;
                if unanswered >= UNANSWERED_ATTEMPTS {
                    return Err(MarketError::NoJetStream {
                        urls: urls.join(","),
                    });
                }
            }
            Err(e) => last = e.to_string(),
        }
        tracing::debug!(attempt, error = %last, "setting up a market stream failed; retrying");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Err(MarketError::Setup {
        what: format!("stream {}", config.name),
        detail: last,
    })
}

/// Runs `op` until it succeeds, for a bounded number of attempts: a
/// JetStream request fails while a stream's leader is being elected.
async fn retry<T, E, F, Fut>(mut op: F) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                last = e.to_string();
                tracing::debug!(attempt, error = %last, "market request failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    Err(last)
}

/// Like `retry`, except that an error `settled` recognises is an answer,
/// not a failure: it ends the attempts with `Ok(None)`.
async fn retry_settled<T, E, F, Fut>(
    mut op: F,
    settled: impl Fn(&E) -> bool,
) -> Result<Option<T>, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let settled = &settled;
    retry(|| {
        let attempt = op();
        async move {
            match attempt.await {
                Ok(value) => Ok(Some(value)),
                Err(e) if settled(&e) => Ok(None),
                Err(e) => Err(e),
            }
        }
    })
    .await
}

fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
