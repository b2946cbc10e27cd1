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

fn per_record_ns(iterations: u64, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed().as_nanos() as f64 / iterations as f64
}

fn main() {
    let parsed = parse(ORDER, &[], false).expect("schema");
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&parsed.schema)
        .build()
        .expect("writer");
    let body = writer.write_value_to_vec(order(36)).expect("encode");
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
        "record: {} bytes of Avro (an order with 36 lines)",
        body.len()
    );
    println!("| pass over the bytes | ns/record | MB/s |");
    println!("|---|---:|---:|");
    println!(
        "| AvroValidator::check | {validate:.0} | {:.0} |",
        mb(validate)
    );
    println!(
        "| CRC-32C (hardware) | {checksum:.0} | {:.0} |",
        mb(checksum)
    );
    println!(
        "| apache-avro decode to values | {decode:.0} | {:.0} |",
        mb(decode)
    );
}
