//! Word count: lines of text in `text-lines` → the number of times each
//! word was seen, in `word-counts` (key: the word, value: an 8-byte
//! big-endian count), kept in the store `word-counts-store`.
//!
//! ```text
//! runnel serve &                                   # a broker on 127.0.0.1:9092
//! runnel topic create text-lines --partitions 3
//! runnel topic create word-counts --partitions 3
//! cargo run -p runnel-streams --example word_count -- 127.0.0.1:9092 127.0.0.1:7070
//! echo "the quick brown fox jumps over the lazy dog" | runnel produce text-lines
//! runnel consume word-counts --from-beginning --print-key   # values: 8-byte big-endian counts
//! curl -L 127.0.0.1:7070/stores/word-counts-store/the       # {"key":"the","value":2,...}
//! ```
//!
//! Start it twice (the second with another query address): the two
//! instances share the partitions, each answers for every word (`-L`
//! follows the redirect to the instance that holds it); stop one and the
//! other takes over its words with their counts.

#[path = "run.rs"]
mod run;

use runnel_streams::{serdes, Consumed, Produced, Stored, StreamsBuilder, Topology};

fn topology() -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream(
            "text-lines",
            Consumed::with(serdes::nullable(serdes::string()), serdes::string()),
        )
        .flat_map_values(|line: String| {
            line.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(
            |_, word: &String| word.clone(),
            serdes::string(),
            serdes::string(),
        )
        .count(Stored::as_("word-counts-store"))
        .to_stream()
        .to(
            "word-counts",
            Produced::with(serdes::string(), serdes::nullable(serdes::i64())),
        );
    builder.build().expect("a valid topology")
}

fn main() {
    run::run("word-count", topology());
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_streams::TopologyTestDriver;

    #[test]
    fn counts_each_word_across_lines_case_insensitively() {
        let mut driver = TopologyTestDriver::new(topology(), "word-count");
        let (k, v) = (serdes::nullable(serdes::string()), serdes::string());
        driver
            .pipe("text-lines", &k, &v, None, "The cat".into(), 1)
            .unwrap();
        driver
            .pipe("text-lines", &k, &v, None, "the dog, the end".into(), 2)
            .unwrap();
        let (w, c) = (serdes::string(), serdes::nullable(serdes::i64()));
        let out = driver.read_key_values("word-counts", &w, &c).unwrap();
        let the: Vec<_> = out
            .iter()
            .filter(|(k, _)| k == "the")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(the, vec![Some(1), Some(2), Some(3)]);
        assert_eq!(
            driver.get("word-counts-store", &w, &serdes::i64(), &"dog".to_string()),
            Some(1)
        );
    }
}
