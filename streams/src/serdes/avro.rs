//! Avro keys and values in the Confluent wire format, through a schema
//! registry (Runnel's or Confluent's), like Kafka's `GenericAvroSerde` and
//! `SpecificAvroSerde`:
//!
//! ```text
//! byte 0      magic, always 0
//! bytes 1..5  schema id, big-endian
//! bytes 5..   one Avro datum of that schema (binary encoding)
//! ```
//!
//! - [`GenericAvro`] ([`generic`]) reads and writes [`serde_json::Value`]s:
//!   records are objects, unions their branch's value, enums their symbol
//!   (see [`Compiled`] for every type). It reads each record with the
//!   schema it was written with, so a value shows as written; its
//!   [`Serde::to_json`] is the value itself, so interactive queries show
//!   Avro stores as JSON.
//! - [`TypedAvro<T>`] ([`typed`]) reads and writes any
//!   `T: Serialize + DeserializeOwned` through its JSON form and the Avro
//!   schema it is built with. That schema is the *reader* schema: a record
//!   written with another schema is resolved to it by Avro's rules, so a
//!   record written with an older compatible version (one without a field
//!   that has a default) still reads.
//!
//! **Subjects.** A [`Serde`] is not told which topic it writes to, and
//! Kafka names subjects after the topic (`TopicNameStrategy`:
//! `<topic>-key`, `<topic>-value`), so an Avro serde is built for one
//! subject ([`AvroConfig::value_of`]`("orders")` is `orders-value`): use
//! one serde per topic it writes to, as key or value. Reads need no
//! subject: every payload names its schema by id.
//!
//! **Which schema a write uses** is the serde's [`WriteSchema`]: its own
//! schema, registered under the subject ([`WriteSchema::AutoRegister`],
//! Confluent's `auto.register.schemas=true`) or only looked up there
//! ([`WriteSchema::LookUp`], `auto.register.schemas=false`), or the
//! subject's latest version ([`WriteSchema::Latest`],
//! `use.latest.version=true`).
//!
//! **Blocking and caching.** [`Serde`] is synchronous and runs on the
//! stream thread; the registry client is async (reqwest, which needs a
//! tokio reactor). An [`AvroRegistry`] owns a one-thread tokio runtime;
//! a serde hands it a request and blocks until the answer, which works
//! whether or not the calling thread is itself in a tokio runtime. It does
//! so only on a miss: each serde keeps the writer schemas it has read by
//! id (an id never changes meaning) and the id it writes with, so after
//! the first record of each schema, records do no HTTP and never leave
//! the stream thread. Under [`WriteSchema::Latest`] the subject's latest
//! version is asked again after [`LATEST_TTL`] (while the registry cannot
//! be reached, the version known so far is kept).
//!
//! **Errors.** A registry that is down or answers garbage, an unknown
//! schema id, a payload not in the wire format, a body that does not
//! match its schema, a value that does not fit the schema: each is a
//! [`SerdeError`] naming the subject and what failed, which the
//! application's error handler ([`ErrorHandling`](crate::ErrorHandling))
//! deals with like any record that does not decode. Nothing here panics
//! on a payload or a registry answer.
//!
//! Nulls: the generic serde writes `Value::Null` as a null (a tombstone)
//! and reads a null as `Value::Null`, as Confluent's serializers do; the
//! typed serde refuses nulls (wrap it in [`Nullable`](super::Nullable)).
//!
//! ```no_run
//! use runnel_streams::serdes::{self, avro::{AvroConfig, AvroRegistry}};
//! use runnel_streams::{Consumed, Produced, StreamsBuilder};
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Total { order: String, cents: i64 }
//! const TOTAL: &str = r#"{"type":"record","name":"Total","fields":[
//!     {"name":"order","type":"string"},{"name":"cents","type":"long"}]}"#;
//!
//! let registry = AvroRegistry::new("http://localhost:8081").unwrap();
//! let orders = serdes::avro::generic(&registry, AvroConfig::value_of("orders")).unwrap();
//! let totals = serdes::avro::typed::<Total>(
//!     &registry,
//!     AvroConfig::value_of("totals").schema(TOTAL),
//! )
//! .unwrap();
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream("orders", Consumed::with(serdes::string(), orders))
//!     .map_values(|o: serde_json::Value| Total {
//!         order: o["id"].as_str().unwrap_or_default().to_string(),
//!         cents: o["qty"].as_i64().unwrap_or(0) * o["price_cents"].as_i64().unwrap_or(0),
//!     })
//!     .to("totals", Produced::with(serdes::string(), totals));
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use runnel_schema_registry::client::LATEST_TTL;
use runnel_schema_registry::client::{frame, ClientError, Compiled, RegistryClient};
use runnel_schema_registry::validate::split;
use serde_json::Value;

use super::{null_refused, Serde, SerdeError, SerdeRef};

/// Writer schemas one serde keeps by id; when full it starts over.
const WRITER_SCHEMAS_MAX: usize = 1_000;
/// How long a registry request may take before the record fails: the
/// stream thread waits that long, so well under the consumer's
/// `max.poll.interval.ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A schema registry for Avro serdes: the shared REST client (with its
/// caches) and the small runtime its requests run on. Cheap to clone;
/// every serde built from it shares both.
#[derive(Clone)]
pub struct AvroRegistry {
    shared: Arc<Shared>,
}

struct Shared {
    client: Arc<RegistryClient>,
    url: String,
    handle: tokio::runtime::Handle,
    /// Taken on drop (see there).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which tokio refuses on a
        // thread inside another runtime (a serde dropped in async code):
        // let them end in the background instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for AvroRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroRegistry")
            .field("url", &self.shared.url)
            .finish()
    }
}

impl AvroRegistry {
    /// A registry at `url` (`schema.registry.url`: the first of a
    /// comma-separated list is used), requests timing out after
    /// [`DEFAULT_TIMEOUT`].
    pub fn new(url: &str) -> Result<AvroRegistry, SerdeError> {
        Self::with_timeout(url, DEFAULT_TIMEOUT)
    }

    /// A registry whose requests give up after `timeout`.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<AvroRegistry, SerdeError> {
        let client = RegistryClient::with_timeout(url, timeout).map_err(SerdeError::new)?;
        // One worker: requests are rare (cache misses) and short.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_name("avro-registry")
            .enable_all()
            .build()
            .map_err(|e| {
                SerdeError::new(format!("the schema registry client cannot start: {e}"))
            })?;
        Ok(AvroRegistry {
            shared: Arc::new(Shared {
                client: Arc::new(client),
                url: url.to_string(),
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
            }),
        })
    }

    /// The URL it was built with.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    fn client(&self) -> Arc<RegistryClient> {
        self.shared.client.clone()
    }

    /// Runs a registry request on the registry's runtime and waits for it.
    /// Spawned rather than `Runtime::block_on`, which panics on a thread
    /// that is already in a runtime.
    fn run<T, F>(&self, request: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ClientError>> + Send + 'static,
    {
        let task = self.shared.handle.spawn(request);
        futures::executor::block_on(task).map_err(|e| {
            ClientError::Unavailable(format!(
                "schema registry request to {} did not finish: {e}",
                self.shared.url
            ))
        })?
    }
}

/// Which schema a serde writes with, and how it gets the schema's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteSchema {
    /// The serde's schema, registered under the subject on the first
    /// write (the registry answers the existing id when it has it, and
    /// refuses a schema incompatible with the subject's). Confluent's
    /// `auto.register.schemas=true`, its default.
    #[default]
    AutoRegister,
    /// The serde's schema, looked up under the subject: writes fail until
    /// someone registers it. `auto.register.schemas=false`, for registries
    /// whose schemas are managed elsewhere.
    LookUp,
    /// The subject's latest schema, whatever the serde was built with
    /// (asked again after [`LATEST_TTL`]). `use.latest.version=true`.
    Latest,
}

/// What an Avro serde is built with: the subject it writes under, its
/// schema, and how writes use it.
#[derive(Debug, Clone)]
pub struct AvroConfig {
    /// The subject writes register under or look up.
    pub subject: String,
    /// The serde's schema (Avro JSON). The generic serde needs one to
    /// write unless [`WriteSchema::Latest`]; the typed serde always (it is
    /// the schema records are read as). References to other subjects'
    /// schemas are not supported here: give the schema whole.
    pub schema: Option<String>,
    pub write: WriteSchema,
}

impl AvroConfig {
    /// A serde writing under `subject`.
    pub fn subject(subject: impl Into<String>) -> AvroConfig {
        AvroConfig {
            subject: subject.into(),
            schema: None,
            write: WriteSchema::default(),
        }
    }

    /// A serde for the values of `topic`: subject `<topic>-value`
    /// (`TopicNameStrategy`).
    pub fn value_of(topic: &str) -> AvroConfig {
        Self::subject(format!("{topic}-value"))
    }

    /// A serde for the keys of `topic`: subject `<topic>-key`.
    pub fn key_of(topic: &str) -> AvroConfig {
        Self::subject(format!("{topic}-key"))
    }

    /// With this schema (Avro JSON).
    pub fn schema(mut self, schema: impl Into<String>) -> AvroConfig {
        self.schema = Some(schema.into());
        self
    }

    /// Writing as `write` says.
    pub fn write(mut self, write: WriteSchema) -> AvroConfig {
        self.write = write;
        self
    }
}

/// The schema a serde writes with, once the registry told its id.
struct Writing {
    id: i32,
    schema: Arc<Compiled>,
    fetched: Instant,
}

/// What the generic and the typed serde share: the subject, the schema,
/// and the caches that keep steady-state records off the network.
struct Core {
    registry: AvroRegistry,
    subject: String,
    /// The serde's own schema: as given (what is registered) and compiled.
    schema: Option<(String, Arc<Compiled>)>,
    write: WriteSchema,
    /// Writer schemas read so far, by id.
    writers: Mutex<HashMap<i32, Arc<Compiled>>>,
    writing: Mutex<Option<Writing>>,
}

impl Core {
    fn new(registry: &AvroRegistry, config: AvroConfig) -> Result<Core, SerdeError> {
        let schema = match config.schema {
            Some(text) => {
                let parsed =
                    runnel_schema_registry::schema::parse(&text, &[], false).map_err(|e| {
                        SerdeError::new(format!(
                            "Avro schema for subject '{}' cannot be used: {e}",
                            config.subject
                        ))
                    })?;
                Some((text, Arc::new(Compiled::new(parsed.schema))))
            }
            None => None,
        };
        Ok(Core {
            registry: registry.clone(),
            subject: config.subject,
            schema,
            write: config.write,
            writers: Mutex::new(HashMap::new()),
            writing: Mutex::new(None),
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> SerdeError {
        SerdeError::new(format!("Avro (subject '{}'): {message}", self.subject))
    }

    /// The schema `id` names, from the cache or the registry.
    fn writer_schema(&self, id: i32) -> Result<Arc<Compiled>, SerdeError> {
        if let Some(schema) = lock(&self.writers).get(&id) {
            return Ok(schema.clone());
        }
        let client = self.registry.client();
        let schema = self
            .registry
            .run(async move { client.by_id(id).await })
            .map_err(|e| {
                let e = e.to_string();
                if e.contains(&format!("schema id {id}")) {
                    self.error(e)
                } else {
                    self.error(format!("schema id {id}: {e}"))
                }
            })?;
        self.remember(id, schema.clone());
        Ok(schema)
    }

    fn remember(&self, id: i32, schema: Arc<Compiled>) {
        let mut writers = lock(&self.writers);
        if writers.len() >= WRITER_SCHEMAS_MAX {
            writers.clear();
        }
        writers.insert(id, schema);
    }

    /// A payload's schema id, body, and the schema that wrote it.
    fn unframe<'a>(&self, payload: &'a [u8]) -> Result<(i32, &'a [u8], Arc<Compiled>), SerdeError> {
        let (id, body) = split(payload).map_err(|e| self.error(e))?;
        Ok((id, body, self.writer_schema(id)?))
    }

    /// The id and schema writes use, from the cache or the registry.
    fn write_schema(&self) -> Result<(i32, Arc<Compiled>), SerdeError> {
        if let Some(w) = &*lock(&self.writing) {
            if self.write != WriteSchema::Latest || w.fetched.elapsed() < LATEST_TTL {
                return Ok((w.id, w.schema.clone()));
            }
        }
        let client = self.registry.client();
        let subject = self.subject.clone();
        let (id, schema) = match self.write {
            WriteSchema::Latest => {
                match self
                    .registry
                    .run(async move { client.latest(&subject).await })
                {
                    Ok(latest) => latest,
                    // A registry briefly away should not fail every
                    // record: keep writing the version known so far, and
                    // ask again after another TTL.
                    Err(e) if e.is_retriable() => {
                        let mut writing = lock(&self.writing);
                        let Some(w) = writing.as_mut() else {
                            return Err(self.error(e));
                        };
                        tracing::warn!(subject = %self.subject, id = w.id, error = %e,
                            "the subject's latest schema could not be asked again; writing the last one known");
                        w.fetched = Instant::now();
                        return Ok((w.id, w.schema.clone()));
                    }
                    Err(e) => return Err(self.error(e)),
                }
            }
            WriteSchema::AutoRegister | WriteSchema::LookUp => {
                let Some((text, schema)) = &self.schema else {
                    return Err(self.error(
                        "this serde has no schema to write with (give it one, or write with \
                         the subject's latest: WriteSchema::Latest)",
                    ));
                };
                let text = text.clone();
                let register = self.write == WriteSchema::AutoRegister;
                let id = self
                    .registry
                    .run(async move { client.id_of(&subject, &text, register).await })
                    .map_err(|e| self.error(e))?;
                (id, schema.clone())
            }
        };
        // What this serde writes, it can read back without asking.
        self.remember(id, schema.clone());
        *lock(&self.writing) = Some(Writing {
            id,
            schema: schema.clone(),
            fetched: Instant::now(),
        });
        Ok((id, schema))
    }

    /// `value` as one framed Avro datum of the write schema.
    fn encode(&self, value: &Value) -> Result<Vec<u8>, SerdeError> {
        let (id, schema) = self.write_schema()?;
        let body = schema
            .encode(value)
            .map_err(|e| self.error(format!("schema id {id}: {e}")))?;
        Ok(frame(id, &body))
    }
}

/// Text for a key in a query URL: JSON, or a bare word as a JSON string.
fn json_of_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Avro records as [`serde_json::Value`]s, read with the schema that wrote
/// them (Kafka's `GenericAvroSerde`). See the [module docs](self).
pub struct GenericAvro {
    core: Core,
}

impl GenericAvro {
    pub fn new(registry: &AvroRegistry, config: AvroConfig) -> Result<GenericAvro, SerdeError> {
        Ok(GenericAvro {
            core: Core::new(registry, config)?,
        })
    }
}

impl Serde<Value> for GenericAvro {
    fn serialize(&self, value: &Value) -> Result<Option<Vec<u8>>, SerdeError> {
        if value.is_null() {
            return Ok(None);
        }
        self.core.encode(value).map(Some)
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Value, SerdeError> {
        let Some(payload) = bytes else {
            return Ok(Value::Null);
        };
        let (id, body, writer) = self.core.unframe(payload)?;
        writer
            .decode(body)
            .map_err(|e| self.core.error(format!("schema id {id}: {e}")))
    }

    fn is_null(&self, value: &Value) -> bool {
        value.is_null()
    }

    fn to_json(&self, value: &Value) -> Option<Value> {
        Some(value.clone())
    }

    fn parse_text(&self, text: &str) -> Option<Result<Value, SerdeError>> {
        Some(Ok(json_of_text(text)))
    }
}

/// Avro records as a Rust type, through its JSON form and the Avro schema
/// the serde is built with, which records are read as (Kafka's
/// `SpecificAvroSerde`). See the [module docs](self).
pub struct TypedAvro<T> {
    core: Core,
    /// The serde's schema: what records are resolved to.
    reader: Arc<Compiled>,
    _type: PhantomData<fn() -> T>,
}

impl<T> TypedAvro<T> {
    /// Needs `config.schema`: the schema `T`'s JSON form fits.
    pub fn new(registry: &AvroRegistry, config: AvroConfig) -> Result<TypedAvro<T>, SerdeError> {
        let core = Core::new(registry, config)?;
        let Some((_, reader)) = &core.schema else {
            return Err(core.error(
                "a typed Avro serde needs the schema its type is read as (AvroConfig::schema)",
            ));
        };
        Ok(TypedAvro {
            reader: reader.clone(),
            core,
            _type: PhantomData,
        })
    }
}

impl<T> Serde<T> for TypedAvro<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        let json = serde_json::to_value(value).map_err(|e| {
            self.core.error(format!(
                "{} has no JSON form: {e}",
                std::any::type_name::<T>()
            ))
        })?;
        self.core.encode(&json).map(Some)
    }

    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let payload = bytes.ok_or_else(null_refused)?;
        let (id, body, writer) = self.core.unframe(payload)?;
        let json = writer
            .decode_as(body, &self.reader)
            .map_err(|e| self.core.error(format!("schema id {id}: {e}")))?;
        serde_json::from_value(json).map_err(|e| {
            self.core.error(format!(
                "schema id {id}: the record does not fit {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    fn to_json(&self, value: &T) -> Option<Value> {
        serde_json::to_value(value).ok()
    }

    fn parse_text(&self, text: &str) -> Option<Result<T, SerdeError>> {
        Some(
            serde_json::from_value(json_of_text(text))
                .map_err(|e| SerdeError::new(format!("{text:?} is not this key's JSON: {e}"))),
        )
    }
}

/// A [`GenericAvro`] serde, shared.
pub fn generic(registry: &AvroRegistry, config: AvroConfig) -> Result<SerdeRef<Value>, SerdeError> {
    Ok(Arc::new(GenericAvro::new(registry, config)?))
}

/// A [`TypedAvro`] serde of `T`, shared.
pub fn typed<T>(registry: &AvroRegistry, config: AvroConfig) -> Result<SerdeRef<T>, SerdeError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    Ok(Arc::new(TypedAvro::<T>::new(registry, config)?))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use axum::Router;
    use serde_json::json;

    use super::*;

    const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"id","type":"string"},{"name":"qty","type":"int"}]}"#;
    const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"id","type":"string"},{"name":"qty","type":"int"},
        {"name":"currency","type":"string","default":"EUR"}]}"#;

    /// Schema id the fake registry answers with garbage for.
    const GARBAGE_ID: i32 = 666;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: String,
        qty: i32,
        currency: String,
    }

    #[derive(Default)]
    struct Fake {
        /// Schema texts; id = index + 1.
        schemas: Vec<String>,
        /// Subject → ids of its versions, oldest first.
        subjects: HashMap<String, Vec<i32>>,
    }

    type Shared = Arc<(Mutex<Fake>, AtomicUsize)>;

    /// A registry answering the few Confluent REST routes the client uses,
    /// in process, counting the requests it gets.
    struct FakeRegistry {
        url: String,
        state: Shared,
        _runtime: tokio::runtime::Runtime,
    }

    fn schema_of(body: &str) -> String {
        serde_json::from_str::<Value>(body).unwrap()["schema"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn by_id(State(s): State<Shared>, Path(id): Path<i32>) -> (StatusCode, String) {
        s.1.fetch_add(1, Ordering::SeqCst);
        if id == GARBAGE_ID {
            return (StatusCode::OK, "<html>proxy error</html>".into());
        }
        let fake = lock(&s.0);
        match usize::try_from(id - 1)
            .ok()
            .and_then(|i| fake.schemas.get(i))
        {
            Some(text) => (StatusCode::OK, json!({ "schema": text }).to_string()),
            None => (
                StatusCode::NOT_FOUND,
                json!({"error_code": 40403, "message": "Schema not found"}).to_string(),
            ),
        }
    }

    async fn register(
        State(s): State<Shared>,
        Path(subject): Path<String>,
        body: String,
    ) -> String {
        s.1.fetch_add(1, Ordering::SeqCst);
        let text = schema_of(&body);
        let mut fake = lock(&s.0);
        let id = match fake.schemas.iter().position(|t| *t == text) {
            Some(i) => i as i32 + 1,
            None => {
                fake.schemas.push(text);
                fake.schemas.len() as i32
            }
        };
        let versions = fake.subjects.entry(subject).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        json!({ "id": id }).to_string()
    }

    async fn look_up(
        State(s): State<Shared>,
        Path(subject): Path<String>,
        body: String,
    ) -> (StatusCode, String) {
        s.1.fetch_add(1, Ordering::SeqCst);
        let text = schema_of(&body);
        let fake = lock(&s.0);
        let id = fake
            .schemas
            .iter()
            .position(|t| *t == text)
            .map(|i| i as i32 + 1);
        match id.filter(|id| fake.subjects.get(&subject).is_some_and(|v| v.contains(id))) {
            Some(id) => (
                StatusCode::OK,
                json!({ "id": id, "schema": text }).to_string(),
            ),
            None => (
                StatusCode::NOT_FOUND,
                json!({"error_code": 40403, "message": "Schema not found"}).to_string(),
            ),
        }
    }

    async fn latest(State(s): State<Shared>, Path(subject): Path<String>) -> (StatusCode, String) {
        s.1.fetch_add(1, Ordering::SeqCst);
        let fake = lock(&s.0);
        match fake.subjects.get(&subject).and_then(|v| v.last()) {
            Some(&id) => (
                StatusCode::OK,
                json!({ "id": id, "schema": fake.schemas[id as usize - 1] }).to_string(),
            ),
            None => (
                StatusCode::NOT_FOUND,
                json!({"error_code": 40401, "message": "Subject not found"}).to_string(),
            ),
        }
    }

    impl FakeRegistry {
        fn start() -> FakeRegistry {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let state: Shared = Arc::default();
            let app = Router::new()
                .route("/schemas/ids/{id}", get(by_id))
                .route("/subjects/{subject}", post(look_up))
                .route("/subjects/{subject}/versions", post(register))
                .route("/subjects/{subject}/versions/latest", get(latest))
                .with_state(state.clone());
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            runtime.spawn(async move { axum::serve(listener, app).await });
            FakeRegistry {
                url,
                state,
                _runtime: runtime,
            }
        }

        fn registry(&self) -> AvroRegistry {
            AvroRegistry::new(&self.url).unwrap()
        }

        fn requests(&self) -> usize {
            self.state.1.load(Ordering::SeqCst)
        }

        /// Registers `schema` under `subject` as another client would.
        fn register(&self, subject: &str, schema: &str) -> i32 {
            let client = RegistryClient::new(&self.url).unwrap();
            let (subject, schema) = (subject.to_string(), schema.to_string());
            self._runtime
                .block_on(async move { client.id_of(&subject, &schema, true).await })
                .unwrap()
        }
    }

    /// A registry nothing listens at.
    fn down() -> AvroRegistry {
        AvroRegistry::with_timeout("http://127.0.0.1:1", Duration::from_secs(2)).unwrap()
    }

    fn generic_v1(registry: &AvroRegistry) -> GenericAvro {
        GenericAvro::new(registry, AvroConfig::value_of("orders").schema(ORDER_V1)).unwrap()
    }

    #[test]
    fn payloads_not_in_the_wire_format_are_refused_without_asking_the_registry() {
        let serde = generic_v1(&down());
        let e = serde.deserialize(Some(&[1, 0, 0, 0, 1, 2])).unwrap_err();
        assert!(e.0.contains("magic byte is 1"), "{e}");
        assert!(e.0.contains("subject 'orders-value'"), "{e}");
        for short in [&[][..], &[0], &[0, 0, 0, 1]] {
            let e = serde.deserialize(Some(short)).unwrap_err();
            assert!(e.0.contains("too short"), "{e}");
        }
    }

    #[test]
    fn generic_values_are_framed_with_the_id_registered_under_the_topic_subject() {
        let fake = FakeRegistry::start();
        let serde = generic_v1(&fake.registry());
        let order = json!({"id": "o1", "qty": 3});
        let bytes = serde.serialize(&order).unwrap().unwrap();
        let id = lock(&fake.state.0).subjects["orders-value"][0];
        assert_eq!(bytes[0], 0, "magic byte");
        assert_eq!(bytes[1..5], id.to_be_bytes());
        // The body is plain Avro: "o1" (length 2 zigzag = 4), then 3 (6).
        assert_eq!(bytes[5..], [4, b'o', b'1', 6]);
        assert_eq!(serde.deserialize(Some(&bytes)).unwrap(), order);
        assert_eq!(serde.to_json(&order), Some(order.clone()));
        // Another serde (another application) reads it by the id alone.
        let reader = GenericAvro::new(&fake.registry(), AvroConfig::subject("any")).unwrap();
        assert_eq!(reader.deserialize(Some(&bytes)).unwrap(), order);
    }

    #[test]
    fn steady_state_records_ask_the_registry_nothing() {
        let fake = FakeRegistry::start();
        let writer = generic_v1(&fake.registry());
        let reader = GenericAvro::new(&fake.registry(), AvroConfig::subject("any")).unwrap();
        let first = writer.serialize(&json!({"id": "o0", "qty": 0})).unwrap();
        reader.deserialize(first.as_deref()).unwrap();
        let asked = fake.requests();
        assert_eq!(asked, 2, "one registration, one schema by id");
        for i in 1..200 {
            let bytes = writer
                .serialize(&json!({"id": format!("o{i}"), "qty": i}))
                .unwrap();
            assert_eq!(reader.deserialize(bytes.as_deref()).unwrap()["qty"], i);
            writer.deserialize(bytes.as_deref()).unwrap();
        }
        assert_eq!(fake.requests(), asked);
    }

    #[test]
    fn a_record_written_with_an_older_schema_reads_as_the_typed_serdes_newer_one() {
        let fake = FakeRegistry::start();
        let registry = fake.registry();
        let old = generic_v1(&registry)
            .serialize(&json!({"id": "o1", "qty": 2}))
            .unwrap();
        let typed =
            TypedAvro::<Order>::new(&registry, AvroConfig::value_of("orders").schema(ORDER_V2))
                .unwrap();
        let want = Order {
            id: "o1".into(),
            qty: 2,
            currency: "EUR".into(),
        };
        assert_eq!(typed.deserialize(old.as_deref()).unwrap(), want);
        // Its own writes register the new version and read back.
        let new = typed.serialize(&want).unwrap().unwrap();
        assert_eq!(lock(&fake.state.0).subjects["orders-value"].len(), 2);
        assert_eq!(typed.deserialize(Some(&new)).unwrap(), want);
        assert!(
            typed.deserialize(None).is_err(),
            "typed serdes refuse nulls"
        );
    }

    #[test]
    fn an_unknown_schema_id_is_an_error_naming_the_id() {
        let fake = FakeRegistry::start();
        let serde = generic_v1(&fake.registry());
        let e = serde
            .deserialize(Some(&frame(99, &[2, b'x', 0])))
            .unwrap_err();
        assert_eq!(
            e.0,
            "Avro (subject 'orders-value'): schema id 99 is unknown to the schema registry"
        );
    }

    #[test]
    fn truncated_or_foreign_bodies_are_errors_not_panics() {
        let fake = FakeRegistry::start();
        let serde = generic_v1(&fake.registry());
        let bytes = serde
            .serialize(&json!({"id": "a long order id", "qty": 1_000_000}))
            .unwrap()
            .unwrap();
        for cut in 5..bytes.len() {
            let e = serde.deserialize(Some(&bytes[..cut])).unwrap_err();
            assert!(e.0.contains("schema id 1"), "{e}");
        }
        // A string length far beyond the payload.
        let e = serde
            .deserialize(Some(&frame(1, &[0xfe, 0xff, 0xff, 0xff, 0x0f])))
            .unwrap_err();
        assert!(e.0.contains("schema id 1"), "{e}");
        let mut long = bytes.clone();
        long.push(7);
        assert!(serde
            .deserialize(Some(&long))
            .unwrap_err()
            .0
            .contains("left over"));
    }

    #[test]
    fn a_registry_that_is_down_or_answers_garbage_fails_the_record_with_the_reason() {
        let serde = generic_v1(&down());
        let e = serde.deserialize(Some(&frame(1, &[]))).unwrap_err();
        assert!(
            e.0.starts_with("Avro (subject 'orders-value'): schema id 1: schema registry at")
                && e.0.contains("unreachable"),
            "{e}"
        );
        let e = serde.serialize(&json!({"id": "o", "qty": 1})).unwrap_err();
        assert!(e.0.contains("unreachable"), "{e}");

        let fake = FakeRegistry::start();
        let serde = generic_v1(&fake.registry());
        let e = serde
            .deserialize(Some(&frame(GARBAGE_ID, &[])))
            .unwrap_err();
        assert!(
            e.0.contains(&format!("schema id {GARBAGE_ID}")) && e.0.contains("has no schema"),
            "{e}"
        );
    }

    #[test]
    fn values_that_do_not_fit_the_schema_name_the_field() {
        let fake = FakeRegistry::start();
        let serde = generic_v1(&fake.registry());
        let e = serde.serialize(&json!({"id": 5, "qty": 1})).unwrap_err();
        assert!(e.0.contains("field 'id'"), "{e}");
        assert!(
            GenericAvro::new(&fake.registry(), AvroConfig::subject("s").schema("{nope")).is_err()
        );
        assert!(TypedAvro::<Order>::new(&fake.registry(), AvroConfig::subject("s")).is_err());
    }

    #[test]
    fn look_up_and_latest_write_only_what_the_subject_already_has() {
        let fake = FakeRegistry::start();
        let registry = fake.registry();
        let look_up = GenericAvro::new(
            &registry,
            AvroConfig::value_of("orders")
                .schema(ORDER_V1)
                .write(WriteSchema::LookUp),
        )
        .unwrap();
        let latest = GenericAvro::new(
            &registry,
            AvroConfig::value_of("orders").write(WriteSchema::Latest),
        )
        .unwrap();
        let order = json!({"id": "o1", "qty": 1});
        let e = look_up.serialize(&order).unwrap_err();
        assert!(
            e.0.contains("not registered under subject 'orders-value'"),
            "{e}"
        );
        let e = latest.serialize(&order).unwrap_err();
        assert!(e.0.contains("has no schema"), "{e}");
        assert_eq!(fake.requests(), 2, "nothing was registered");

        let v1 = fake.register("orders-value", ORDER_V1);
        let v2 = fake.register("orders-value", ORDER_V2);
        assert_eq!(
            look_up.serialize(&order).unwrap().unwrap()[1..5],
            v1.to_be_bytes()
        );
        let bytes = latest.serialize(&order).unwrap().unwrap();
        assert_eq!(bytes[1..5], v2.to_be_bytes());
        assert_eq!(latest.deserialize(Some(&bytes)).unwrap()["currency"], "EUR");
        // A serde with no schema of its own cannot write on its own.
        let read_only = GenericAvro::new(&registry, AvroConfig::value_of("orders")).unwrap();
        assert!(read_only
            .serialize(&order)
            .unwrap_err()
            .0
            .contains("no schema"));
    }

    #[test]
    fn nulls_are_tombstones_for_generic_values() {
        let serde = generic_v1(&down());
        assert_eq!(serde.serialize(&Value::Null), Ok(None));
        assert_eq!(serde.deserialize(None), Ok(Value::Null));
        assert!(serde.is_null(&Value::Null));
        assert_eq!(serde.parse_text("alice").unwrap().unwrap(), json!("alice"));
        assert_eq!(
            serde.parse_text("{\"a\":1}").unwrap().unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn serdes_work_on_a_thread_that_is_in_a_tokio_runtime() {
        let fake = FakeRegistry::start();
        let serde = generic_v1(&fake.registry());
        let order = json!({"id": "o1", "qty": 1});
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let back = runtime.block_on(async {
            let bytes = serde.serialize(&order).unwrap();
            let fresh = GenericAvro::new(&fake.registry(), AvroConfig::subject("any")).unwrap();
            let back = fresh.deserialize(bytes.as_deref()).unwrap();
            // Dropped inside the runtime: must not panic either.
            drop(fresh);
            back
        });
        assert_eq!(back, order);
    }
}
