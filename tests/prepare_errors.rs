//! `prepare` on bad input: a clear error naming file, column and line, and no
//! partial cache left behind (an existing cache survives untouched).

mod common;

use std::path::Path;

use common::{edit_line, listing, recforge, set_field, small_hm};
use recforge::error::Error;
use recforge::ingest::Format;
use recforge::pipeline::commands::prepare;

fn fails_cleanly(raw: &Path, work: &Path) -> Error {
    let before = listing(work);
    let err = prepare(raw, &work.join("cache"), Format::Auto).expect_err("bad input must fail");
    assert_eq!(
        listing(work),
        before,
        "a failed prepare must not leave files behind"
    );
    err
}

#[test]
fn corrupted_date_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 1);
    let tx = raw.join("transactions_train.csv");
    edit_line(&tx, 57, |l| l.replacen(&l[..10], "2019-02-31", 1));
    match fails_cleanly(&raw, dir.path()) {
        Error::BadValue {
            file,
            line,
            column,
            msg,
        } => {
            assert!(file.ends_with("transactions_train.csv"));
            assert_eq!((line, column.as_str()), (57, "t_dat"));
            assert!(msg.contains("2019-02-31"), "{msg}");
        }
        e => panic!("unexpected error: {e}"),
    }
}

#[test]
fn unparsable_price_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 2);
    let tx = raw.join("transactions_train.csv");
    set_field(&tx, 1000, 3, "0.0x3");
    let e = fails_cleanly(&raw, dir.path()).to_string();
    assert!(
        e.contains("line 1000") && e.contains("`price`") && e.contains("0.0x3"),
        "{e}"
    );
}

#[test]
fn missing_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 3);
    let arts = raw.join("articles.csv");
    let text =
        std::fs::read_to_string(&arts)
            .unwrap()
            .replacen("colour_group_code", "colour_code", 1);
    std::fs::write(&arts, text).unwrap();
    match fails_cleanly(&raw, dir.path()) {
        Error::MissingColumn { file, column, .. } => {
            assert!(file.ends_with("articles.csv"));
            assert_eq!(column, "colour_group_code");
        }
        e => panic!("unexpected error: {e}"),
    }
}

#[test]
fn unknown_article_keeps_an_existing_cache_intact() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 4);
    let cache = dir.path().join("cache");
    let good = prepare(&raw, &cache, Format::Hm).unwrap();
    let tx = raw.join("transactions_train.csv");
    set_field(&tx, 321, 2, "0999999999");
    let e = fails_cleanly(&raw, dir.path()).to_string();
    assert!(
        e.contains("line 321") && e.contains("article_id") && e.contains("0999999999"),
        "{e}"
    );
    let still = recforge::data::cache::read(&cache).unwrap();
    assert_eq!(still.inter.len(), good.inter.len());
}

#[test]
fn unknown_customer_and_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 5);
    let tx = raw.join("transactions_train.csv");
    set_field(
        &tx,
        2,
        1,
        "00000000000000000000000000000000000000000000000000000000000000ff",
    );
    let e = fails_cleanly(&raw, dir.path()).to_string();
    assert!(
        e.contains("line 2") && e.contains("unknown customer"),
        "{e}"
    );

    std::fs::write(raw.join("customers.csv"), "").unwrap();
    assert!(matches!(
        fails_cleanly(&raw, dir.path()),
        Error::EmptyFile { .. }
    ));
    std::fs::write(
        raw.join("customers.csv"),
        "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code\n",
    )
    .unwrap();
    assert!(matches!(
        fails_cleanly(&raw, dir.path()),
        Error::EmptyFile { .. }
    ));
}

#[test]
fn the_binary_prints_the_error_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_hm(dir.path(), 6);
    set_field(&raw.join("customers.csv"), 10, 5, "forty");
    let cache = dir.path().join("cache");
    let (ok, _, stderr) = recforge(&[
        "prepare",
        "--data",
        raw.to_str().unwrap(),
        "--out",
        cache.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("customers.csv: line 10, column `age`: `forty`"),
        "{stderr}"
    );
    assert!(!cache.exists());
}
