//! How keys and values become bytes on a topic and back.
//!
//! A [`Serde<T>`] turns a `T` into the bytes of a record's key or value
//! and back. Kafka's keys and values may be null: `serialize` answers
//! `None` for a value that is null on the wire, and `deserialize` gets
//! `None` for a null it reads. Only a nullable type can hold a null: wrap a
//! serde in [`Nullable`] to get `Option<T>`; the plain serdes refuse a
//! null with a [`SerdeError`], which goes to the application's
//! deserialization error handler like any other undecodable record.
//!
//! What is null decides Kafka Streams' rules: grouping drops records whose
//! key is null, aggregations skip null values, joins drop null keys.
//!
//! With the `avro` feature (on by default), [`avro`] adds Avro serdes in
//! the Confluent wire format through a schema registry.

use std::marker::PhantomData;
use std::sync::Arc;

#[cfg(feature = "avro")]
pub mod avro;

/// Why a key or value could not be (de)serialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SerdeError(pub String);

impl SerdeError {
    pub fn new(message: impl Into<String>) -> SerdeError {
        SerdeError(message.into())
    }
}

/// Converts a `T` to and from the bytes of a record's key or value.
pub trait Serde<T>: Send + Sync + 'static {
    /// The bytes of `value`; `None` writes a null.
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError>;
    /// The value of `bytes` (`None`: the record held a null).
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError>;
    /// Whether `value` is null on the wire (cheaper than serializing it).
    fn is_null(&self, _value: &T) -> bool {
        false
    }
    /// `value` as JSON, for interactive queries over HTTP (`None`: this
    /// serde has no JSON form; the query shows the raw bytes).
    fn to_json(&self, _value: &T) -> Option<serde_json::Value> {
        None
    }
    /// A `T` from text, for a key in a query URL (`None`: this serde
    /// cannot read text; the key's bytes are taken to be the text's).
    fn parse_text(&self, _text: &str) -> Option<Result<T, SerdeError>> {
        None
    }
}

/// Bytes as JSON for a serde that has no JSON form: a string when they
/// are UTF-8, else `0x` and their hex digits.
pub fn raw_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => {
            let mut hex = String::with_capacity(2 + bytes.len() * 2);
            hex.push_str("0x");
            for b in bytes {
                hex.push_str(&format!("{b:02x}"));
            }
            serde_json::Value::String(hex)
        }
    }
}

/// The bytes of `bytes` decoded by `serde`, as JSON (raw if the serde
/// has no JSON form or cannot read them).
pub fn bytes_to_json<T: 'static>(serde: &SerdeRef<T>, bytes: Option<&[u8]>) -> serde_json::Value {
    match serde.deserialize(bytes) {
        Ok(v) => serde
            .to_json(&v)
            .unwrap_or_else(|| bytes.map_or(serde_json::Value::Null, raw_json)),
        Err(_) => bytes.map_or(serde_json::Value::Null, raw_json),
    }
}

/// The bytes `serde` writes for the value `text` names (a key in a
/// query URL).
pub fn text_to_bytes<T: 'static>(serde: &SerdeRef<T>, text: &str) -> Result<Vec<u8>, SerdeError> {
    match serde.parse_text(text) {
        None => Ok(text.as_bytes().to_vec()),
        Some(parsed) => serde
            .serialize(&parsed?)?
            .ok_or_else(|| SerdeError::new("a key cannot be null")),
    }
}

/// A shareable serde.
pub type SerdeRef<T> = Arc<dyn Serde<T>>;

pub(crate) fn null_refused() -> SerdeError {
    SerdeError::new("null where a value was expected (use a Nullable serde to accept nulls)")
}

/// Raw bytes, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Serde<Vec<u8>> for Bytes {
    fn serialize(&self, value: &Vec<u8>) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.clone()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Vec<u8>, SerdeError> {
        bytes.map(<[u8]>::to_vec).ok_or_else(null_refused)
    }
    fn to_json(&self, value: &Vec<u8>) -> Option<serde_json::Value> {
        Some(raw_json(value))
    }
}

/// UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Str;

impl Serde<String> for Str {
    fn serialize(&self, value: &String) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.as_bytes().to_vec()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<String, SerdeError> {
        let bytes = bytes.ok_or_else(null_refused)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| SerdeError::new(format!("not UTF-8: {e}")))
    }
    fn to_json(&self, value: &String) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(value.clone()))
    }
    fn parse_text(&self, text: &str) -> Option<Result<String, SerdeError>> {
        Some(Ok(text.to_string()))
    }
}

/// A big-endian 8-byte integer (Kafka's `LongSerializer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct I64;

impl Serde<i64> for I64 {
    fn serialize(&self, value: &i64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_be_bytes().to_vec()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<i64, SerdeError> {
        let bytes = bytes.ok_or_else(null_refused)?;
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| SerdeError::new(format!("a long takes 8 bytes, not {}", bytes.len())))?;
        Ok(i64::from_be_bytes(array))
    }
    fn to_json(&self, value: &i64) -> Option<serde_json::Value> {
        Some((*value).into())
    }
    fn parse_text(&self, text: &str) -> Option<Result<i64, SerdeError>> {
        Some(
            text.trim()
                .parse()
                .map_err(|e| SerdeError::new(format!("{text:?} is not a long: {e}"))),
        )
    }
}

/// A big-endian IEEE 754 double (Kafka's `DoubleSerializer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct F64;

impl Serde<f64> for F64 {
    fn serialize(&self, value: &f64) -> Result<Option<Vec<u8>>, SerdeError> {
        Ok(Some(value.to_be_bytes().to_vec()))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<f64, SerdeError> {
        let bytes = bytes.ok_or_else(null_refused)?;
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| SerdeError::new(format!("a double takes 8 bytes, not {}", bytes.len())))?;
        Ok(f64::from_be_bytes(array))
    }
    fn to_json(&self, value: &f64) -> Option<serde_json::Value> {
        // NaN and the infinities have no JSON number: null.
        Some(serde_json::Number::from_f64(*value).map_or(serde_json::Value::Null, Into::into))
    }
    fn parse_text(&self, text: &str) -> Option<Result<f64, SerdeError>> {
        Some(
            text.trim()
                .parse()
                .map_err(|e| SerdeError::new(format!("{text:?} is not a double: {e}"))),
        )
    }
}

/// JSON through `serde`.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    pub fn new() -> Json<T> {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json::new()
    }
}

impl<T> Serde<T> for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        serde_json::to_vec(value)
            .map(Some)
            .map_err(|e| SerdeError::new(format!("JSON: {e}")))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        let bytes = bytes.ok_or_else(null_refused)?;
        serde_json::from_slice(bytes).map_err(|e| SerdeError::new(format!("JSON: {e}")))
    }
    fn to_json(&self, value: &T) -> Option<serde_json::Value> {
        serde_json::to_value(value).ok()
    }
    fn parse_text(&self, text: &str) -> Option<Result<T, SerdeError>> {
        // JSON text; a bare word is taken as a JSON string (`alice` for
        // `"alice"`), as URLs write string keys.
        Some(
            serde_json::from_str(text)
                .or_else(|_| serde_json::from_value(serde_json::Value::String(text.to_string())))
                .map_err(|e| SerdeError::new(format!("{text:?} is not this key's JSON: {e}"))),
        )
    }
}

/// `Option<T>` over a serde of `T`: `None` is a null on the wire.
pub struct Nullable<S>(pub S);

impl<T, S: Serde<T>> Serde<Option<T>> for Nullable<S> {
    fn serialize(&self, value: &Option<T>) -> Result<Option<Vec<u8>>, SerdeError> {
        match value {
            Some(v) => self.0.serialize(v),
            None => Ok(None),
        }
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<Option<T>, SerdeError> {
        match bytes {
            Some(b) => self.0.deserialize(Some(b)).map(Some),
            None => Ok(None),
        }
    }
    fn is_null(&self, value: &Option<T>) -> bool {
        value.is_none()
    }
    fn to_json(&self, value: &Option<T>) -> Option<serde_json::Value> {
        match value {
            Some(v) => self.0.to_json(v),
            None => Some(serde_json::Value::Null),
        }
    }
    fn parse_text(&self, text: &str) -> Option<Result<Option<T>, SerdeError>> {
        self.0.parse_text(text).map(|r| r.map(Some))
    }
}

impl<T: 'static> Serde<T> for Arc<dyn Serde<T>> {
    fn serialize(&self, value: &T) -> Result<Option<Vec<u8>>, SerdeError> {
        (**self).serialize(value)
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<T, SerdeError> {
        (**self).deserialize(bytes)
    }
    fn is_null(&self, value: &T) -> bool {
        (**self).is_null(value)
    }
    fn to_json(&self, value: &T) -> Option<serde_json::Value> {
        (**self).to_json(value)
    }
    fn parse_text(&self, text: &str) -> Option<Result<T, SerdeError>> {
        (**self).parse_text(text)
    }
}

/// Shorthands: `serdes::string()`, `serdes::json::<Order>()`, ...
pub fn bytes() -> SerdeRef<Vec<u8>> {
    Arc::new(Bytes)
}
pub fn string() -> SerdeRef<String> {
    Arc::new(Str)
}
pub fn i64() -> SerdeRef<i64> {
    Arc::new(I64)
}
pub fn f64() -> SerdeRef<f64> {
    Arc::new(F64)
}
pub fn json<T>() -> SerdeRef<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    Arc::new(Json::<T>::new())
}
pub fn nullable<T: 'static>(inner: SerdeRef<T>) -> SerdeRef<Option<T>> {
    Arc::new(Nullable(inner))
}

/// A windowed key on a topic: the key's bytes, then the window's start
/// and end as big-endian 8-byte integers (milliseconds).
pub struct WindowedSerde<K>(pub SerdeRef<K>);

impl<K: 'static> Serde<crate::record::Windowed<K>> for WindowedSerde<K> {
    fn serialize(&self, value: &crate::record::Windowed<K>) -> Result<Option<Vec<u8>>, SerdeError> {
        let mut out = self
            .0
            .serialize(&value.key)?
            .ok_or_else(|| SerdeError::new("a windowed key cannot be null"))?;
        out.extend_from_slice(&value.window.start_ms.to_be_bytes());
        out.extend_from_slice(&value.window.end_ms.to_be_bytes());
        Ok(Some(out))
    }
    fn deserialize(&self, bytes: Option<&[u8]>) -> Result<crate::record::Windowed<K>, SerdeError> {
        let bytes = bytes.ok_or_else(null_refused)?;
        if bytes.len() < 16 {
            return Err(SerdeError::new(format!(
                "a windowed key takes at least 16 bytes, not {}",
                bytes.len()
            )));
        }
        let (key, times) = bytes.split_at(bytes.len() - 16);
        let start = i64::from_be_bytes(times[..8].try_into().expect("8 bytes"));
        let end = i64::from_be_bytes(times[8..].try_into().expect("8 bytes"));
        Ok(crate::record::Windowed {
            key: self.0.deserialize(Some(key))?,
            window: crate::record::Window {
                start_ms: start,
                end_ms: end,
            },
        })
    }
    fn to_json(&self, value: &crate::record::Windowed<K>) -> Option<serde_json::Value> {
        let key = self.0.to_json(&value.key).or_else(|| {
            let bytes = self.0.serialize(&value.key).ok().flatten()?;
            Some(raw_json(&bytes))
        })?;
        Some(serde_json::json!({
            "key": key,
            "start": value.window.start_ms,
            "end": value.window.end_ms,
        }))
    }
}

/// Windowed keys over a serde of the key.
pub fn windowed<K: 'static>(inner: SerdeRef<K>) -> SerdeRef<crate::record::Windowed<K>> {
    Arc::new(WindowedSerde(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_serdes_refuse_nulls_and_nullable_ones_hold_them() {
        assert!(Str.deserialize(None).is_err());
        let n = Nullable(Str);
        assert_eq!(n.deserialize(None), Ok(None));
        assert_eq!(n.serialize(&None), Ok(None));
        assert!(n.is_null(&None));
        assert_eq!(n.deserialize(Some(b"x")).unwrap(), Some("x".to_string()));
    }

    #[test]
    fn longs_are_big_endian_eight_bytes_as_in_kafka() {
        assert_eq!(
            I64.serialize(&1).unwrap().unwrap(),
            vec![0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            I64.deserialize(Some(&[0, 0, 0, 0, 0, 0, 1, 0])).unwrap(),
            256
        );
        assert!(I64.deserialize(Some(&[1, 2])).is_err());
    }

    #[test]
    fn json_round_trips_and_names_what_it_could_not_read() {
        let s = Json::<Vec<u32>>::new();
        let b = s.serialize(&vec![1, 2]).unwrap().unwrap();
        assert_eq!(s.deserialize(Some(&b)).unwrap(), vec![1, 2]);
        let e = s.deserialize(Some(b"{")).unwrap_err();
        assert!(e.0.starts_with("JSON"), "{e}");
    }
}
