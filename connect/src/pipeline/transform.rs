//! Pipeline transforms: a chain applied to every batch between a source
//! and a sink. Built-ins (filter by expression, rename and drop fields,
//! mask fields, route to a topic by field) and WASM plugins through
//! `runnel-plugin-host`.
//!
//! A batch moves through each step as one batch. A step reports the
//! records it cannot transform one by one ([`Failure`]) and passes the
//! others on; a step that fails as a whole (a plugin that trapped) is run
//! again one record at a time to find the records at fault. So one bad
//! record never costs its batch, and a batch without failures costs no
//! more than one call per step.
//!
//! # Filter expressions
//!
//! `filter:` takes an [`evalexpr`] expression over the names `value`,
//! `value.<field>` (nested with dots), `key`, `key.<field>` and `topic`.
//! A name the record does not have is an error for that record (it goes
//! to the dead-letter topic, or fails the task, as `errors.tolerance`
//! says), never a quiet `false`: a typo must not drop every record.
//! `has(value.x)` asks whether the record has the field with a value
//! other than null, so `has(value.discount) && value.discount > 5` keeps
//! the records with a discount over 5 and drops the others without an
//! error. `&&` and `||` evaluate their right side only when the left one
//! does not decide.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use evalexpr::{
    error::EvalexprResultValue, Context, DefaultNumericTypes, EvalexprError, EvalexprResult, Node,
    Operator,
};
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

/// A record a step could not transform.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The input record's index (a step: its position in the step's
    /// input; the chain: its position in the chain's input).
    pub source_index: usize,
    /// Why; the chain puts the step's name in front.
    pub error: String,
    /// The record as the failing step received it.
    pub record: Option<Record>,
}

/// One step of a chain.
pub trait Transform: Send + Sync {
    fn name(&self) -> String;
    /// Transforms a batch in place. On return `records` holds the outputs,
    /// each with the `source_index` of the input it came from (the input's
    /// position in `records`). A record the step cannot transform is left
    /// out and reported in `failed`; the others go on. `Err` means the
    /// step failed as a whole without naming a record (a plugin trapped):
    /// `records` must then be as they were.
    fn apply(&self, records: &mut Vec<Record>, failed: &mut Vec<Failure>) -> Result<(), String>;
}

/// Transforms applied in order.
#[derive(Default, Clone)]
pub struct Chain {
    pub steps: Vec<Arc<dyn Transform>>,
}

/// What a chain made of a batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The outputs; `source_index` names each one's input.
    pub records: Vec<Record>,
    /// The inputs that failed, by input index.
    pub failed: Vec<Failure>,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step; each output's `source_index` names its input.
    pub fn apply(&self, mut records: Vec<Record>) -> Outcome {
        let mut failed = Vec::new();
        for (i, r) in records.iter_mut().enumerate() {
            r.source_index = i;
        }
        for step in &self.steps {
            if records.is_empty() {
                break;
            }
            // Remember where each record came from across steps.
            let origins: Vec<usize> = records.iter().map(|r| r.source_index).collect();
            for (i, r) in records.iter_mut().enumerate() {
                r.source_index = i;
            }
            let mut here = Vec::new();
            if step.apply(&mut records, &mut here).is_err() {
                // Which record? Ask again one at a time.
                records = one_at_a_time(&**step, records, &mut here);
            }
            if !here.is_empty() {
                let name = step.name();
                failed.extend(here.into_iter().map(|f| Failure {
                    source_index: origins.get(f.source_index).copied().unwrap_or(0),
                    error: format!("{name}: {}", f.error),
                    record: f.record,
                }));
            }
            for r in &mut records {
                r.source_index = origins.get(r.source_index).copied().unwrap_or(0);
            }
        }
        failed.sort_by_key(|f| f.source_index);
        Outcome { records, failed }
    }
}

/// Runs `step` on each record alone; a record it fails on is a failure.
fn one_at_a_time(
    step: &dyn Transform,
    records: Vec<Record>,
    failed: &mut Vec<Failure>,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    for (i, mut r) in records.into_iter().enumerate() {
        r.source_index = 0;
        let mut one = vec![r];
        let mut why = Vec::new();
        match step.apply(&mut one, &mut why) {
            Ok(()) => {
                out.extend(one.into_iter().map(|mut o| {
                    o.source_index = i;
                    o
                }));
                failed.extend(why.into_iter().map(|f| Failure {
                    source_index: i,
                    ..f
                }));
            }
            Err(error) => failed.push(Failure {
                source_index: i,
                error,
                record: one.pop(),
            }),
        }
    }
    out
}

fn object(d: &mut Data) -> Option<&mut Map<String, Value>> {
    match d {
        Data::Json(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// What a name in an expression starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Value,
    Key,
    Topic,
}

/// A name in a filter expression: `value.user.country` is the path
/// `[user, country]` of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    /// As written.
    pub text: String,
    pub root: Root,
    pub path: Vec<String>,
}

impl FieldRef {
    pub fn parse(text: &str) -> Result<FieldRef, String> {
        let mut parts = text.split('.');
        let root = match parts.next().unwrap_or("") {
            "value" => Root::Value,
            "key" => Root::Key,
            "topic" => Root::Topic,
            _ => {
                return Err(format!(
                "unknown name '{text}': names are value, value.<field>, key, key.<field> and topic"
            ))
            }
        };
        let path: Vec<String> = parts.map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("'{text}' is not a field name"));
        }
        if root == Root::Topic && !path.is_empty() {
            return Err(format!("'{text}': topic is a string, without fields"));
        }
        Ok(FieldRef {
            text: text.to_string(),
            root,
            path,
        })
    }

    /// The field's value in `r`; `None` when the record does not have it.
    fn lookup<'a>(&self, r: &'a Record) -> Option<Cow<'a, Value>> {
        let data = match self.root {
            Root::Topic => return Some(Cow::Owned(Value::String(r.topic.to_string()))),
            Root::Value => &r.value,
            Root::Key => &r.key,
        };
        match data {
            Data::Json(v) => {
                let mut at = v;
                for part in &self.path {
                    at = at.as_object()?.get(part)?;
                }
                Some(Cow::Borrowed(at))
            }
            // Text and bytes have no fields.
            _ if !self.path.is_empty() => None,
            other => Some(Cow::Owned(other.to_json())),
        }
    }
}

type EValue = evalexpr::Value<DefaultNumericTypes>;

fn to_evalexpr(v: &Value) -> EValue {
    match v {
        Value::Null => EValue::Empty,
        Value::Bool(b) => EValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => EValue::from_int(i),
            None => EValue::from_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => EValue::String(s.clone()),
        // Arrays and objects compare as their JSON text.
        other => EValue::String(other.to_string()),
    }
}

/// `filter: <expression>`: keeps the records for which it is true (see
/// the module docs for names and `has`).
pub struct Filter {
    pub expression: String,
    tree: Node<DefaultNumericTypes>,
    /// The names the expression reads, outside `has(...)`.
    reads: Vec<FieldRef>,
    /// The names `has(...)` asks about.
    tests: Vec<FieldRef>,
}

/// The names of one record, as an expression context.
struct Fields<'a> {
    reads: &'a [FieldRef],
    /// By `reads` index; `None` when the record lacks the name.
    values: Vec<Option<EValue>>,
    tests: &'a [FieldRef],
    record: Option<&'a Record>,
}

impl Context for Fields<'_> {
    type NumericTypes = DefaultNumericTypes;

    fn get_value(&self, identifier: &str) -> Option<&EValue> {
        let i = self.reads.iter().position(|r| r.text == identifier)?;
        self.values.get(i)?.as_ref()
    }

    fn call_function(&self, identifier: &str, argument: &EValue) -> EvalexprResultValue {
        if identifier != "has" {
            return Err(EvalexprError::FunctionIdentifierNotFound(
                identifier.to_string(),
            ));
        }
        let EValue::String(name) = argument else {
            return Err(EvalexprError::CustomMessage(
                "has() takes a name, like has(value.amount)".into(),
            ));
        };
        let Some(record) = self.record else {
            // Checking the expression's shape: any answer does.
            return Ok(EValue::Boolean(true));
        };
        let parsed;
        let field = match self.tests.iter().find(|t| t.text == *name) {
            Some(f) => f,
            None => {
                parsed = FieldRef::parse(name).map_err(EvalexprError::CustomMessage)?;
                &parsed
            }
        };
        Ok(EValue::Boolean(
            field.lookup(record).is_some_and(|v| !v.is_null()),
        ))
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, _disabled: bool) -> EvalexprResult<()> {
        Err(EvalexprError::CustomMessage(
            "builtin functions stay enabled".into(),
        ))
    }
}

/// Evaluates `node`, with `&&` and `||` deciding from their left side
/// when they can (so `has(value.x) && value.x > 1` never reads a missing
/// `value.x`); everything else as evalexpr does.
fn eval(node: &Node<DefaultNumericTypes>, ctx: &Fields<'_>) -> EvalexprResultValue {
    match (node.operator(), node.children()) {
        (Operator::RootNode, [only]) => eval(only, ctx),
        (Operator::And, [a, b]) => Ok(EValue::Boolean(
            eval(a, ctx)?.as_boolean()? && eval(b, ctx)?.as_boolean()?,
        )),
        (Operator::Or, [a, b]) => Ok(EValue::Boolean(
            eval(a, ctx)?.as_boolean()? || eval(b, ctx)?.as_boolean()?,
        )),
        (Operator::Not, [a]) => Ok(EValue::Boolean(!eval(a, ctx)?.as_boolean()?)),
        _ => node.eval_with_context(ctx),
    }
}

/// Turns the argument of every `has(...)` into the name as a string (so
/// evaluating it does not read the field); collects those names.
fn rewrite_has(
    node: &mut Node<DefaultNumericTypes>,
    tests: &mut Vec<FieldRef>,
) -> Result<(), String> {
    if matches!(node.operator(), Operator::FunctionIdentifier { identifier } if identifier == "has")
    {
        // The argument, under the parentheses' root nodes.
        let mut arg = node
            .children_mut()
            .first_mut()
            .ok_or("has() takes a name, like has(value.amount)")?;
        while matches!(arg.operator(), Operator::RootNode) && arg.children().len() == 1 {
            arg = &mut arg.children_mut()[0];
        }
        let name = match arg.operator() {
            Operator::VariableIdentifierRead { identifier } => identifier.clone(),
            Operator::Const {
                value: EValue::String(s),
            } => s.clone(),
            _ => return Err("has() takes a name, like has(value.amount)".into()),
        };
        let field = FieldRef::parse(&name)?;
        *arg.operator_mut() = Operator::Const {
            value: EValue::String(name),
        };
        if !tests.contains(&field) {
            tests.push(field);
        }
        return Ok(());
    }
    for child in node.children_mut() {
        rewrite_has(child, tests)?;
    }
    Ok(())
}

impl Filter {
    pub fn new(expression: &str) -> Result<Filter, String> {
        let mut tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(expression)
            .map_err(|e| format!("cannot parse the expression: {e}"))?;
        if let Some(name) = tree.iter_write_variable_identifiers().next() {
            return Err(format!("'{name}' is assigned to; a filter only reads"));
        }
        let mut tests = Vec::new();
        rewrite_has(&mut tree, &mut tests)?;
        let mut reads: Vec<FieldRef> = Vec::new();
        for name in tree.iter_read_variable_identifiers() {
            if !reads.iter().any(|r| r.text == name) {
                reads.push(FieldRef::parse(name)?);
            }
        }
        // Check its shape: evaluate every part (no short cut) with every
        // name set to 0.
        let probe = Fields {
            values: reads.iter().map(|_| Some(EValue::from_int(0))).collect(),
            reads: &reads,
            tests: &tests,
            record: None,
        };
        match tree.eval_with_context(&probe) {
            Ok(EValue::Boolean(_)) => {}
            Ok(other) => return Err(format!("the expression gives {other}, not true or false")),
            // Type mismatches against the zeros are fine; structure errors are not.
            Err(EvalexprError::WrongOperatorArgumentAmount { .. }) => {
                return Err("an operator is missing an operand".into())
            }
            Err(EvalexprError::FunctionIdentifierNotFound(f)) => {
                return Err(format!("unknown function {f}()"))
            }
            Err(_) => {}
        }
        drop(probe);
        Ok(Filter {
            expression: expression.to_string(),
            tree,
            reads,
            tests,
        })
    }

    /// The names the expression reads: a record without one of them fails.
    pub fn reads(&self) -> &[FieldRef] {
        &self.reads
    }

    /// The names `has(...)` asks about.
    pub fn tests(&self) -> &[FieldRef] {
        &self.tests
    }

    fn matches(&self, r: &Record) -> Result<bool, String> {
        let ctx = Fields {
            reads: &self.reads,
            values: self
                .reads
                .iter()
                .map(|f| f.lookup(r).map(|v| to_evalexpr(&v)))
                .collect(),
            tests: &self.tests,
            record: Some(r),
        };
        match eval(&self.tree, &ctx) {
            Ok(EValue::Boolean(b)) => Ok(b),
            Ok(other) => Err(format!("gives {other}, not true or false")),
            Err(EvalexprError::VariableIdentifierNotFound(name)) => Err(format!(
                "the record has no field {name} (has({name}) tests whether it is there)"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Transform for Filter {
    fn name(&self) -> String {
        format!("filter '{}'", self.expression)
    }
    fn apply(&self, records: &mut Vec<Record>, failed: &mut Vec<Failure>) -> Result<(), String> {
        let mut out = Vec::with_capacity(records.len());
        for (i, mut r) in std::mem::take(records).into_iter().enumerate() {
            match self.matches(&r) {
                Ok(true) => {
                    r.source_index = i;
                    out.push(r);
                }
                Ok(false) => {}
                Err(error) => failed.push(Failure {
                    source_index: i,
                    error,
                    record: Some(r),
                }),
            }
        }
        *records = out;
        Ok(())
    }
}

/// `rename: {old: new}`: renames top-level fields of object values.
pub struct Rename(pub BTreeMap<String, String>);

impl Transform for Rename {
    fn name(&self) -> String {
        "rename".into()
    }
    fn apply(&self, records: &mut Vec<Record>, _: &mut Vec<Failure>) -> Result<(), String> {
        for r in records.iter_mut() {
            if let Some(m) = object(&mut r.value) {
                for (from, to) in &self.0 {
                    if let Some(v) = m.remove(from) {
                        m.insert(to.clone(), v);
                    }
                }
            }
        }
        Ok(())
    }
}

/// `drop: [fields]`: removes fields of object values.
pub struct Drop(pub Vec<String>);

impl Transform for Drop {
    fn name(&self) -> String {
        "drop".into()
    }
    fn apply(&self, records: &mut Vec<Record>, _: &mut Vec<Failure>) -> Result<(), String> {
        for r in records.iter_mut() {
            if let Some(m) = object(&mut r.value) {
                for f in &self.0 {
                    m.remove(f);
                }
            }
        }
        Ok(())
    }
}

/// `mask: [fields]`: replaces the fields' values with `****`.
pub struct Mask(pub Vec<String>);

impl Transform for Mask {
    fn name(&self) -> String {
        "mask".into()
    }
    fn apply(&self, records: &mut Vec<Record>, _: &mut Vec<Failure>) -> Result<(), String> {
        for r in records.iter_mut() {
            if let Some(m) = object(&mut r.value) {
                for f in &self.0 {
                    if let Some(v) = m.get_mut(f) {
                        *v = Value::String("****".into());
                    }
                }
            }
        }
        Ok(())
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
    fn apply(&self, records: &mut Vec<Record>, _: &mut Vec<Failure>) -> Result<(), String> {
        for r in records.iter_mut() {
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
        Ok(())
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
    fn apply(&self, batch: &mut Vec<Record>, _: &mut Vec<Failure>) -> Result<(), String> {
        let input: Vec<runnel_plugin_host::Record> = batch
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
        // On failure the records stay as they were: the chain asks again
        // one record at a time.
        let output = self.plugin.process(&input).map_err(|e| e.to_string())?;
        let records = std::mem::take(batch);
        let last = records.len().saturating_sub(1);
        // How many outputs come from each input: an input that comes out
        // once and unchanged (a filter's kept records) moves on as it is,
        // without being decoded again.
        let mut uses = vec![0usize; records.len()];
        for o in &output {
            uses[(o.source_index as usize).min(last)] += 1;
        }
        let mut originals: Vec<Option<Record>> = records.into_iter().map(Some).collect();
        *batch = output
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
            .collect();
        Ok(())
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

    fn values(records: &[Record]) -> Vec<Value> {
        records.iter().map(|r| r.value.to_json()).collect()
    }

    fn filter(expression: &str, records: Vec<Record>) -> Outcome {
        Chain {
            steps: vec![Arc::new(Filter::new(expression).unwrap())],
        }
        .apply(records)
    }

    #[test]
    fn filters_evaluate_expressions_on_fields() {
        let out = filter(
            "value.amount > 100 && value.user.country == \"DE\" && topic == \"t\"",
            vec![
                rec(json!({"amount": 150, "user": {"country": "DE"}})),
                rec(json!({"amount": 50, "user": {"country": "DE"}})),
                rec(json!({"amount": 500, "user": {"country": "FR"}})),
            ],
        );
        assert_eq!(
            values(&out.records),
            vec![json!({"amount": 150, "user": {"country": "DE"}})]
        );
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        for bad in ["value.amount >", "(((", "value.amount + 1"] {
            assert!(Filter::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_field_fails_its_record_instead_of_comparing_false() {
        let out = filter(
            "value.amout >= 100",
            vec![rec(json!({"id": 1, "amount": 250}))],
        );
        assert!(out.records.is_empty());
        assert_eq!(out.failed.len(), 1);
        let error = &out.failed[0].error;
        assert!(
            error.starts_with("filter 'value.amout >= 100': the record has no field value.amout"),
            "{error}"
        );
        assert!(error.contains("has(value.amout)"), "{error}");
        // The record is handed back as the step received it.
        assert_eq!(
            out.failed[0].record.as_ref().map(|r| r.value.to_json()),
            Some(json!({"id": 1, "amount": 250}))
        );
        // A nested field under a value that is not an object is missing too.
        let out = filter(
            "value.user.country == \"DE\"",
            vec![rec(json!({"user": "ann"}))],
        );
        assert_eq!(out.failed.len(), 1);
        // And so is any field of a text value.
        let text = Record {
            value: Data::string("plain"),
            ..rec(json!(null))
        };
        assert_eq!(filter("value.x == 1", vec![text.clone()]).failed.len(), 1);
        assert_eq!(filter("value == \"plain\"", vec![text]).records.len(), 1);
    }

    #[test]
    fn has_asks_for_a_field_explicitly_and_guards_the_right_side() {
        let records = || {
            vec![
                rec(json!({"discount": 10})),
                rec(json!({"discount": 1})),
                rec(json!({})),
                rec(json!({"discount": null})),
            ]
        };
        let out = filter("has(value.discount) && value.discount > 5", records());
        assert_eq!(values(&out.records), vec![json!({"discount": 10})]);
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        let out = filter("!has(value.discount) || value.discount > 5", records());
        assert_eq!(
            values(&out.records),
            vec![
                json!({"discount": 10}),
                json!({}),
                json!({"discount": null})
            ]
        );
        let out = filter("has(\"value.discount\") == false", records());
        assert_eq!(out.records.len(), 2);
        // Without has, the record without the field fails.
        let out = filter("value.discount > 5", records());
        assert_eq!(out.records.len(), 1);
        let failed: Vec<usize> = out.failed.iter().map(|f| f.source_index).collect();
        // The one without the field, and the one where it is null (no number).
        assert_eq!(failed, vec![2, 3]);
        let f = Filter::new("has(value.a.b) && value.c == 1").unwrap();
        assert_eq!(f.tests()[0].path, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            f.reads()
                .iter()
                .map(|r| r.text.as_str())
                .collect::<Vec<_>>(),
            vec!["value.c"]
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_fails_only_its_record() {
        let out = filter(
            "value.amount >= 100",
            vec![
                rec(json!({"id": 1, "amount": 250})),
                rec(json!({"id": 2, "amount": "lots"})),
                rec(json!({"id": 3, "amount": 300})),
            ],
        );
        assert_eq!(
            values(&out.records),
            vec![
                json!({"id": 1, "amount": 250}),
                json!({"id": 3, "amount": 300})
            ]
        );
        assert_eq!(
            (out.records[0].source_index, out.records[1].source_index),
            (0, 2)
        );
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].source_index, 1);
        assert!(
            out.failed[0]
                .error
                .starts_with("filter 'value.amount >= 100': "),
            "{}",
            out.failed[0].error
        );
    }

    #[test]
    fn names_outside_value_key_and_topic_and_assignments_are_refused() {
        for (bad, why) in [
            ("amount > 100", "unknown name 'amount'"),
            ("value.x = 1", "assigned"),
            ("has(1)", "has() takes a name"),
            ("has(amount)", "unknown name 'amount'"),
            ("nofunction(value.x)", "unknown function nofunction"),
            ("topic.x == 1", "topic is a string"),
        ] {
            let e = Filter::new(bad).err().unwrap_or_default();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // Builtin functions still work.
        let out = filter(
            "str::to_lowercase(value.s) == \"ab\"",
            vec![rec(json!({"s": "AB"}))],
        );
        assert_eq!(out.records.len(), 1);
    }

    /// Fails a batch as a whole when it holds a record with `poison`.
    struct TrapsOnPoison;

    impl Transform for TrapsOnPoison {
        fn name(&self) -> String {
            "trap".into()
        }
        fn apply(&self, records: &mut Vec<Record>, _: &mut Vec<Failure>) -> Result<(), String> {
            if records.iter().any(|r| r.value.to_json()["poison"] == true) {
                return Err("trapped".into());
            }
            for r in records.iter_mut() {
                if let Some(m) = object(&mut r.value) {
                    m.insert("seen".into(), json!(true));
                }
            }
            Ok(())
        }
    }

    #[test]
    fn a_step_that_fails_as_a_whole_is_run_again_one_record_at_a_time() {
        let chain = Chain {
            steps: vec![
                Arc::new(Filter::new("value.id != 0").unwrap()),
                Arc::new(TrapsOnPoison),
            ],
        };
        let out = chain.apply(vec![
            rec(json!({"id": 0})),
            rec(json!({"id": 1})),
            rec(json!({"id": 2, "poison": true})),
            rec(json!({"id": 3})),
        ]);
        assert_eq!(
            values(&out.records),
            vec![
                json!({"id": 1, "seen": true}),
                json!({"id": 3, "seen": true})
            ]
        );
        assert_eq!(
            out.records
                .iter()
                .map(|r| r.source_index)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].source_index, 2);
        assert_eq!(out.failed[0].error, "trap: trapped");
        assert_eq!(
            out.failed[0].record.as_ref().map(|r| r.value.to_json()),
            Some(json!({"id": 2, "poison": true}))
        );
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
        let out = chain.apply(vec![
            rec(json!({"mail": "a@b.c", "secret": 1, "status": "PAID"})),
            rec(json!({"status": "SKIP"})),
            rec(json!({"status": "new order!"})),
        ]);
        assert!(out.failed.is_empty());
        let out = out.records;
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
