//! Payload validation: the Confluent wire format and an Avro body check.
