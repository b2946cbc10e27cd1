//! Pipeline transforms: a chain applied to every batch between a source
//! and a sink. Built-ins (filter by expression, rename and drop fields,
//! mask fields, route to a topic by field) and WASM plugins through
//! `runnel-plugin-host`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node};
use serde_json::{Map, Value};

use crate::record::Data;

/// A record inside a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: Arc<str>,
    pub key: Data,
    pub value: Data,
    pub headers: Vec<(String, Bytes)>,
    pub timestamp_ms: Option<i64>,
    /// Index of the input record this one came from (set by the chain).
    pub source_index: usize,
}

/// One step of a chain.
pub trait Transform: Send + Sync {
    fn name(&self) -> String;
    /// Transforms a batch; outputs keep `source_index` of their inputs.
    fn apply(&self, records: Vec<Record>) -> Result<Vec<Record>, String>;
}

/// Transforms applied in order.
#[derive(Default, Clone)]
pub struct Chain {
    pub steps: Vec<Arc<dyn Transform>>,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step; each output's `source_index` names its input.
    pub fn apply(&self, mut records: Vec<Record>) -> Result<Vec<Record>, String> {
        for (i, r) in records.iter_mut().enumerate() {
            r.source_index = i;
        }
        for step in &self.steps {
            // Remember where each record came from across steps.
            let origins: Vec<usize> = records.iter().map(|r| r.source_index).collect();
            for (i, r) in records.iter_mut().enumerate() {
                r.source_index = i;
            }
            let out = step
                .apply(records)
                .map_err(|e| format!("{}: {e}", step.name()))?;
            records = out
                .into_iter()
                .map(|mut r| {
                    r.source_index = origins.get(r.source_index).copied().unwrap_or(0);
                    r
                })
                .collect();
        }
        Ok(records)
    }
}

fn object(d: &mut Data) -> Option<&mut Map<String, Value>> {
    match d {
        Data::Json(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// `filter: <expression>`: keeps the records for which it is true. Names
/// are `value.<field>` (nested with dots), `key`, `topic`; a record
/// without a named field does not match.
pub struct Filter {
    pub expression: String,
    tree: Node<DefaultNumericTypes>,
}

fn flatten(prefix: &str, v: &Value, ctx: &mut HashMapContext<DefaultNumericTypes>) {
    use evalexpr::Value as E;
    let value = match v {
        Value::Null => E::Empty,
        Value::Bool(b) => E::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => E::from_int(i),
            None => E::from_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => E::String(s.clone()),
        Value::Array(_) => E::String(v.to_string()),
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, ctx);
            }
            return;
        }
    };
    let _ = ctx.set_value(prefix.to_string(), value);
}

impl Filter {
    pub fn new(expression: &str) -> Result<Filter, String> {
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(expression)
            .map_err(|e| format!("cannot parse the expression: {e}"))?;
        // Check its shape: evaluate with every name set to 0.
        let mut ctx = HashMapContext::<DefaultNumericTypes>::new();
        for id in tree.iter_variable_identifiers() {
            let _ = ctx.set_value(id.to_string(), evalexpr::Value::from_int(0));
        }
        match tree.eval_with_context(&ctx) {
            Ok(evalexpr::Value::Boolean(_)) => {}
            Ok(other) => return Err(format!("the expression gives {other}, not true or false")),
            // Type mismatches against the zeros are fine; structure errors are not.
            Err(evalexpr::EvalexprError::WrongOperatorArgumentAmount { .. }) => {
                return Err("an operator is missing an operand".into())
            }
            Err(_) => {}
        }
        Ok(Filter {
            expression: expression.to_string(),
            tree,
        })
    }

    fn matches(&self, r: &Record) -> Result<bool, String> {
        let mut ctx = HashMapContext::<DefaultNumericTypes>::new();
        flatten("value", &r.value.to_json(), &mut ctx);
        flatten("key", &r.key.to_json(), &mut ctx);
        let _ = ctx.set_value("topic".into(), evalexpr::Value::String(r.topic.to_string()));
        match self.tree.eval_boolean_with_context(&ctx) {
            Ok(b) => Ok(b),
            Err(evalexpr::EvalexprError::VariableIdentifierNotFound(_)) => Ok(false),
            Err(e) => Err(format!("'{}' on a record: {e}", self.expression)),
        }
    }
}

impl Transform for Filter {
    fn name(&self) -> String {
        format!("filter '{}'", self.expression)
    }
    fn apply(&self, records: Vec<Record>) -> Result<Vec<Record>, String> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            if self.matches(&r)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// `rename: {old: new}`: renames top-level fields of object values.
pub struct Rename(pub BTreeMap<String, String>);

impl Transform for Rename {
    fn name(&self) -> String {
        "rename".into()
    }
    fn apply(&self, mut records: Vec<Record>) -> Result<Vec<Record>, String> {
        for r in &mut records {
            if let Some(m) = object(&mut r.value) {
                for (from, to) in &self.0 {
                    if let Some(v) = m.remove(from) {
                        m.insert(to.clone(), v);
                    }
                }
            }
        }
        Ok(records)
    }
}

/// `drop: [fields]`: removes fields of object values.
pub struct Drop(pub Vec<String>);

impl Transform for Drop {
    fn name(&self) -> String {
        "drop".into()
    }
    fn apply(&self, mut records: Vec<Record>) -> Result<Vec<Record>, String> {
        for r in &mut records {
            if let Some(m) = object(&mut r.value) {
                for f in &self.0 {
                    m.remove(f);
                }
            }
        }
        Ok(records)
    }
}

/// `mask: [fields]`: replaces the fields' values with `****`.
pub struct Mask(pub Vec<String>);

impl Transform for Mask {
    fn name(&self) -> String {
        "mask".into()
    }
    fn apply(&self, mut records: Vec<Record>) -> Result<Vec<Record>, String> {
        for r in &mut records {
            if let Some(m) = object(&mut r.value) {
                for f in &self.0 {
                    if let Some(v) = m.get_mut(f) {
                        *v = Value::String("****".into());
                    }
                }
            }
        }
        Ok(records)
    }
}

/// `route: {field: f, topic: "orders-{}"}`: sends each record to the topic
/// the template names with the field's value (records without the field
/// keep their topic).
pub struct Route {
    pub field: String,
    pub template: String,
}

impl Transform for Route {
    fn name(&self) -> String {
        format!("route by {}", self.field)
    }
    fn apply(&self, mut records: Vec<Record>) -> Result<Vec<Record>, String> {
        for r in &mut records {
            let v = r.value.to_json();
            let field = self.field.split('.').try_fold(&v, |v, part| v.get(part));
            let part = match field {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            // Topic names allow [a-zA-Z0-9._-].
            let part: String = part
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            r.topic = Arc::from(self.template.replace("{}", &part));
        }
        Ok(records)
    }
}

/// A WASM plugin (filter, map, filter-map or flat-map) through the plugin
/// host. Values are handed over as bytes: JSON values as JSON text; plugin
/// output that is JSON becomes JSON again.
pub struct Wasm {
    pub path: String,
    pub plugin: Arc<runnel_plugin_host::Plugin>,
}

fn to_bytes(d: &Data) -> Option<Bytes> {
    match d {
        Data::Null => None,
        Data::Bytes(b) => Some(b.clone()),
        Data::Text(s) => Some(s.as_bytes().clone()),
        Data::Json(Value::String(s)) => Some(Bytes::from(s.clone().into_bytes())),
        Data::Json(v) => Some(Bytes::from(v.to_string().into_bytes())),
    }
}

/// Text when the bytes are UTF-8, otherwise the bytes.
fn text_or_bytes(b: Bytes) -> Data {
    match ByteString::try_from(b.clone()) {
        Ok(s) => Data::Text(s),
        Err(_) => Data::Bytes(b),
    }
}

fn from_bytes(b: Option<Bytes>, like: &Data) -> Data {
    match (b, like) {
        (None, _) => Data::Null,
        (Some(b), Data::Bytes(_)) => Data::Bytes(b),
        (Some(b), Data::Text(_) | Data::Json(Value::String(_))) => text_or_bytes(b),
        (Some(b), _) => match serde_json::from_slice::<Value>(&b) {
            Ok(v) => Data::Json(v),
            Err(_) => text_or_bytes(b),
        },
    }
}

impl Transform for Wasm {
    fn name(&self) -> String {
        format!("plugin {}", self.path)
    }
    fn apply(&self, records: Vec<Record>) -> Result<Vec<Record>, String> {
        let input: Vec<runnel_plugin_host::Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| runnel_plugin_host::Record {
                offset: i as i64,
                timestamp: r.timestamp_ms.unwrap_or(-1),
                key: to_bytes(&r.key),
                value: to_bytes(&r.value),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
                source_index: 0,
            })
            .collect();
        let output = self.plugin.process(&input).map_err(|e| e.to_string())?;
        let last = records.len().saturating_sub(1);
        // How many outputs come from each input: an input that comes out
        // once and unchanged (a filter's kept records) moves on as it is,
        // without being decoded again.
        let mut uses = vec![0usize; records.len()];
        for o in &output {
            uses[(o.source_index as usize).min(last)] += 1;
        }
        let mut originals: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        Ok(output
            .into_iter()
            .filter_map(|o| {
                let i = (o.source_index as usize).min(last);
                let sent = &input[i];
                let unchanged = o.key == sent.key
                    && o.value == sent.value
                    && o.timestamp == sent.timestamp
                    && o.headers == sent.headers;
                if unchanged && uses[i] == 1 {
                    if let Some(mut r) = originals[i].take() {
                        r.source_index = i;
                        return Some(r);
                    }
                }
                let from = originals[i].as_ref()?;
                Some(Record {
                    topic: from.topic.clone(),
                    key: from_bytes(o.key, &from.key),
                    value: from_bytes(o.value, &from.value),
                    headers: o
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default()))
                        .collect(),
                    timestamp_ms: (o.timestamp >= 0).then_some(o.timestamp),
                    source_index: o.source_index as usize,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record {
            topic: "t".into(),
            key: Data::Null,
            value: Data::Json(v),
            headers: vec![],
            timestamp_ms: None,
            source_index: 0,
        }
    }

    #[test]
    fn filters_evaluate_expressions_on_fields() {
        let f = Filter::new("value.amount > 100 && value.user.country == \"DE\"").unwrap();
        let out = f
            .apply(vec![
                rec(json!({"amount": 150, "user": {"country": "DE"}})),
                rec(json!({"amount": 50, "user": {"country": "DE"}})),
                rec(json!({"amount": 500, "user": {"country": "FR"}})),
                rec(json!({"other": 1})),
            ])
            .unwrap();
        assert_eq!(out.len(), 1);
        for bad in ["value.amount >", "(((", "value.amount + 1"] {
            assert!(Filter::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rename_drop_mask_and_route_change_fields_and_topics() {
        let chain = Chain {
            steps: vec![
                Arc::new(Rename([("mail".to_string(), "email".to_string())].into())),
                Arc::new(Drop(vec!["secret".into()])),
                Arc::new(Mask(vec!["email".into()])),
                Arc::new(Route {
                    field: "status".into(),
                    template: "orders-{}".into(),
                }),
                Arc::new(Filter::new("value.status != \"SKIP\"").unwrap()),
            ],
        };
        let out = chain
            .apply(vec![
                rec(json!({"mail": "a@b.c", "secret": 1, "status": "PAID"})),
                rec(json!({"status": "SKIP"})),
                rec(json!({"status": "new order!"})),
            ])
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].value,
            Data::Json(json!({"email": "****", "status": "PAID"}))
        );
        assert_eq!(&*out[0].topic, "orders-PAID");
        assert_eq!(&*out[1].topic, "orders-new_order_");
        assert_eq!((out[0].source_index, out[1].source_index), (0, 2));
    }
}
