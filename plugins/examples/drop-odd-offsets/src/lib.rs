//! `drop-odd-offsets`: a filter that keeps records with even offsets.
//!
//! Exists for the host's tests: the kept set depends on the offsets the
//! host passes, so it shows that offsets cross the boundary intact. No
//! configuration.

use runnel_plugin::{export_filter, Record};

fn even_offset(record: &Record) -> bool {
    record.offset() % 2 == 0
}

export_filter!(even_offset);

#[cfg(test)]
mod tests {
    use runnel_plugin::{testing, OwnedRecord};

    #[test]
    fn records_at_odd_offsets_are_dropped() {
        let records = vec![OwnedRecord::new(); 5];
        // testing::run_filter numbers offsets from 0.
        assert_eq!(
            testing::run_filter(&records, super::even_offset),
            vec![0, 2, 4]
        );
    }
}
