//! `cargo bench -p runnel-schema-registry --bench validate`: the Avro body
//! check the broker runs on every record of a validated topic, on 1 KiB
//! records, next to a plain pass over the same bytes (a checksum) and to
//! decoding them into values with `apache-avro` in the same run.

use std::hint::black_box;
use std::time::Instant;

use apache_avro::types::Value;
use runnel_schema_registry::schema::parse;
use runnel_schema_registry::validate::AvroValidator;

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
    {"name":"id","type":"string"},
    {"name":"customer","type":"long"},
    {"name":"qty","type":"int"},
    {"name":"price","type":"double"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
        {"name":"sku","type":"string"},{"name":"units","type":"int"},{"name":"cents","type":"long"}]}}}]}"#;

fn order(lines: i64) -> Value {
    Value::Record(vec![
        ("id".into(), Value::String("order-000000000001".into())),
        ("customer".into(), Value::Long(123_456_789)),
        ("qty".into(), Value::Int(3)),
        ("price".into(), Value::Double(59.97)),
        ("status".into(), Value::Enum(1, "PAID".into())),
        (
            "tags".into(),
            Value::Array(vec![
                Value::String("gift".into()),
                Value::String("express".into()),
            ]),
        ),
        (
            "note".into(),
            Value::Union(1, Box::new(Value::String("leave at the door".into()))),
        ),
        (
            "lines".into(),
            Value::Array(
                (0..lines)
                    .map(|i| {
                        Value::Record(vec![
                            ("sku".into(), Value::String(format!("SKU-{i:08}"))),
                            ("units".into(), Value::Int(i as i32 % 7 + 1)),
                            ("cents".into(), Value::Long(1999 * i)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

const EVENT: &str = r#"{"type":"record","name":"PageView","namespace":"bench","fields":[
    {"name":"event_id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"user_id","type":"long"},
    {"name":"session","type":"string"},
    {"name":"url","type":"string"},
    {"name":"referrer","type":["null","string"],"default":null},
    {"name":"user_agent","type":"string"},
    {"name":"country","type":{"type":"enum","name":"Country","symbols":["DE","FR","US","JP","BR"]}},
    {"name":"duration_ms","type":"int"},
    {"name":"attributes","type":{"type":"map","values":"string"}},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"body","type":"string"}]}"#;

fn event() -> Value {
    Value::Record(vec![
        ("event_id".into(), Value::String("6f1c2a44-8d0e-4b7e-9a51-3c2f0e9d7b18".into())),
        ("ts".into(), Value::Long(1_764_615_000_123)),
        ("user_id".into(), Value::Long(98_765_432_101)),
        ("session".into(), Value::String("s-2f9c61e0b7".into())),
        ("url".into(), Value::String("https://shop.example.com/products/kettle-1l-steel?ref=home".into())),
        ("referrer".into(), Value::Union(1, Box::new(Value::String("https://www.example.org/search?q=kettle".into())))),
        ("user_agent".into(), Value::String("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36".into())),
        ("country".into(), Value::Enum(0, "DE".into())),
        ("duration_ms".into(), Value::Int(5230)),
        (
            "attributes".into(),
            Value::Map(
                [("ab", "variant-b"), ("theme", "dark"), ("locale", "de-DE"), ("cart", "3")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.into())))
                    .collect(),
            ),
        ),
        ("tags".into(), Value::Array(["organic", "campaign-42", "mobile"].map(|t| Value::String(t.into())).to_vec())),
        ("body".into(), Value::String("Ein Wasserkocher aus Edelstahl, 1 Liter, mit Kalkfilter. ".repeat(12))),
    ])
}

fn per_record_ns(iterations: u64, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed().as_nanos() as f64 / iterations as f64
}

fn measure(name: &str, schema: &str, value: Value) {
    let parsed = parse(schema, &[], false).expect("schema");
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&parsed.schema)
        .build()
        .expect("writer");
    let body = writer.write_value_to_vec(value).expect("encode");
    let validator = AvroValidator::new(&parsed.schema).expect("validator");
    assert_eq!(validator.check(&body), Ok(()));
    let n = 2_000_000;
    let validate = per_record_ns(n, || {
        black_box(validator.check(black_box(&body))).ok();
    });
    let checksum = per_record_ns(n, || {
        black_box(crc32c::crc32c(black_box(&body)));
    });
    let decode = per_record_ns(n / 50, || {
        let mut slice = black_box(&body[..]);
        #[allow(deprecated)] // the simplest whole-datum decode of this version
        black_box(apache_avro::from_avro_datum(&parsed.schema, &mut slice, None).ok());
    });
    let mb = |ns: f64| body.len() as f64 / ns * 1e3;
    println!(
        "| {name}, {} B | {validate:.0} ns, {:.0} MB/s | {checksum:.0} ns, {:.0} MB/s | {decode:.0} ns, {:.0} MB/s |",
        body.len(),
        mb(validate),
        mb(checksum),
        mb(decode)
    );
}

fn main() {
    println!(
        "| record | AvroValidator::check | CRC-32C (hardware) | apache-avro decode to values |"
    );
    println!("|---|---:|---:|---:|");
    measure("page-view event (12 fields)", EVENT, event());
    measure("order with 36 lines (~115 fields)", ORDER, order(36));
}
