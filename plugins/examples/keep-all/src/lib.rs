//! `keep-all`: a filter that keeps every record.
//!
//! The host's benchmark measures plugin call overhead with it: parsing the
//! batch into record views and writing the kept indices is all the work
//! there is. No configuration.

use runnel_plugin::{export_filter, Record};

fn keep(_record: &Record) -> bool {
    true
}

export_filter!(keep);
