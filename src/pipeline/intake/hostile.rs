//! Hostile input as a property (issue 10, point 3): arbitrary bytes and mutations of
//! valid manifests against the daemon's own judgement ([`judge_file`]), plus the
//! pathological cases as fixed tests. The properties: the judgement never panics, always
//! gives a verdict with a short message, gives the same verdict twice, and its time and
//! its memory grow no faster than the input (time measured loosely, with a wide margin;
//! memory exactly, by an allocator that counts each thread's bytes in use).

use std::time::Duration;

use proptest::prelude::*;

use super::judge::{judge_file, FileContent, FileRejection, Verdict};
use super::validation::ManifestRejection;

/// The valid manifests that the mutations start from.
const SEEDS: &[&str] = &[
    include_str!("../../../examples/demo.json"),
    include_str!("../../../examples/create.json"),
    include_str!("../../../examples/edit.json"),
];

/// The longest rejection message any input may produce: a message names a rule, a field
/// or an offset, never a copy of the input.
const MAX_MESSAGE_CHARS: usize = 600;

/// The test binary's allocator: the system's, counting each thread's bytes in use and
/// their peak, so that one test measures its own judgement while others run.
mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Meter;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn grow(bytes: usize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get().saturating_add(bytes);
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    fn shrink(bytes: usize) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
    }

    // SAFETY: every call is passed on unchanged to the system allocator; the counting
    // touches only `const` thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let ptr = unsafe { System.alloc(layout) };
            if !ptr.is_null() {
                grow(layout.size());
            }
            ptr
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let ptr = unsafe { System.alloc_zeroed(layout) };
            if !ptr.is_null() {
                grow(layout.size());
            }
            ptr
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            shrink(layout.size());
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let moved = unsafe { System.realloc(ptr, layout, new_size) };
            if !moved.is_null() {
                shrink(layout.size());
                grow(new_size);
            }
            moved
        }
    }

    #[global_allocator]
    static METER: Meter = Meter;

    /// The most bytes this thread had in use while `f` ran, above what it held before.
    pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let before = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(before));
        let value = f();
        (value, PEAK.with(Cell::get).saturating_sub(before))
    }
}

fn judge(bytes: &[u8]) -> Verdict {
    judge_file("hostile.json", &FileContent::Bytes(bytes.to_vec()), None)
}

/// Judges `bytes` and checks what must hold for every input: a verdict, the same one
/// again, and a short message when rejected.
fn check_properties(bytes: &[u8]) -> Result<(), TestCaseError> {
    let verdict = judge(bytes);
    prop_assert_eq!(
        &verdict,
        &judge(bytes),
        "the judgement is not deterministic"
    );
    prop_assert_eq!(verdict.name(), "hostile");
    if let Verdict::Rejected { reason, .. } = &verdict {
        let message = reason.to_string();
        prop_assert!(!message.is_empty());
        prop_assert!(
            message.chars().count() <= MAX_MESSAGE_CHARS,
            "message of {} chars: {}",
            message.chars().count(),
            message
        );
    }
    Ok(())
}

/// One edit of a valid manifest's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    /// Replaces the byte at (position modulo length).
    Replace(usize, u8),
    /// Removes up to `len` bytes from (position modulo length).
    Delete(usize, usize),
    /// Inserts bytes at (position modulo length).
    Insert(usize, Vec<u8>),
    /// Copies up to `len` bytes from one position to another (duplicated keys, items).
    Duplicate(usize, usize, usize),
    /// Cuts the file at (position modulo length).
    Truncate(usize),
}

/// Bytes that matter to JSON, so that the mutations reach past the first parse error.
fn json_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"{}[]\":,\\ 0-1eE.tfn#~/".to_vec()),
        1 => any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), json_byte()).prop_map(|(at, byte)| Mutation::Replace(at, byte)),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<usize>(), prop::collection::vec(json_byte(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1usize..400, any::<usize>())
            .prop_map(|(from, len, to)| Mutation::Duplicate(from, len, to)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match mutation {
        Mutation::Replace(at, byte) => bytes[at % n] = *byte,
        Mutation::Delete(at, len) => {
            let start = at % n;
            let end = (start + len).min(n);
            bytes.drain(start..end);
        }
        Mutation::Insert(at, new) => {
            let at = at % (n + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Duplicate(from, len, to) => {
            let start = from % n;
            let end = (start + len).min(n);
            let copy = bytes[start..end].to_vec();
            let to = to % (n + 1);
            bytes.splice(to..to, copy);
        }
        Mutation::Truncate(at) => bytes.truncate(at % n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_a_verdict_with_a_short_message(
        bytes in prop::collection::vec(any::<u8>(), 0..2048)
    ) {
        check_properties(&bytes)?;
    }

    #[test]
    fn json_like_bytes_get_a_verdict_with_a_short_message(
        bytes in prop::collection::vec(json_byte(), 0..2048)
    ) {
        check_properties(&bytes)?;
    }

    #[test]
    fn mutated_manifests_get_a_verdict_with_a_short_message(
        seed in 0..SEEDS.len(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut bytes = SEEDS[seed].as_bytes().to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_properties(&bytes)?;
    }

    /// An object of arbitrary keys and small values at the top level or in an item is
    /// judged (usually an unknown field), with the message naming a key of the input.
    #[test]
    fn arbitrary_fields_are_named_in_the_rejection(
        keys in prop::collection::vec("[a-z_$#]{1,12}", 1..20),
        in_item in any::<bool>(),
    ) {
        let fields: String = keys
            .iter()
            .map(|k| format!("{}: 1", serde_json::Value::from(k.as_str())))
            .collect::<Vec<_>>()
            .join(",");
        let text = if in_item {
            format!(r#"{{"template_id":"t","items":[{{"client_item_id":"a",{fields}}}]}}"#)
        } else {
            format!(r#"{{"template_id":"t","items":[{{"client_item_id":"a"}}],{fields}}}"#)
        };
        check_properties(text.as_bytes())?;
        if let Verdict::Rejected { reason: FileRejection::Manifest(
            ManifestRejection::UnknownTopLevelField { field, .. }
            | ManifestRejection::UnknownItemField { field, .. }), .. } = judge(text.as_bytes())
        {
            prop_assert!(keys.contains(&field), "`{}` is not one of the input's keys", field);
        }
    }
}

/// The verdict of `bytes`, judged on a thread with a small stack (256 KiB, an eighth of
/// a test thread's): a recursion that the input can drive would overflow it.
fn judge_on_small_stack(bytes: Vec<u8>) -> Verdict {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || judge(&bytes))
        .expect("spawn a thread")
        .join()
        .expect("the judgement did not panic or overflow its stack")
}

fn rejection(verdict: &Verdict) -> ManifestRejection {
    match verdict {
        Verdict::Rejected {
            reason: FileRejection::Manifest(rejection),
            ..
        } => rejection.clone(),
        other => panic!("expected a manifest rejection, got {other:?}"),
    }
}

fn nested(depth: usize, open: &str, close: &str) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn nesting_ten_thousand_deep_is_rejected_cleanly_on_a_small_stack() {
    let deep_array = nested(10_000, "[", "]");
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let cases = [
        // The whole document.
        deep_array.clone(),
        format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
        // Inside an item's free-form JSON, where items are kept as raw text.
        format!(
            r#"{{"template_id":"t","items":[{{"client_item_id":"a","input_data":{deep_object}}}]}}"#
        ),
        format!(
            r#"{{"template_id":"t","items":[{{"client_item_id":"a","input_data":{{"x":{deep_array}}}}}]}}"#
        ),
        // Inside a top-level field and as an item.
        format!(r#"{{"template_id":"t","metadata":{deep_object},"items":[{{}}]}}"#),
        format!(r#"{{"template_id":"t","items":[{deep_array}]}}"#),
        // Unclosed.
        "[".repeat(10_000),
        r#"{"items":"#.to_owned() + &"[".repeat(10_000),
    ];
    for (i, text) in cases.into_iter().enumerate() {
        let verdict = judge_on_small_stack(text.into_bytes());
        let message = match rejection(&verdict) {
            ManifestRejection::NotJson { message } => message,
            ManifestRejection::ItemNotAnObject { .. } => continue,
            other => panic!("case {i}: expected NotJson, got {other:?}"),
        };
        assert!(
            message.contains("recursion limit exceeded") || message.contains("EOF"),
            "case {i}: {message}"
        );
        assert!(message.len() < 200, "case {i}: {message}");
    }
}

#[test]
fn an_enormous_string_is_judged_without_being_copied_into_the_message() {
    let huge = "x".repeat(2 * 1024 * 1024);
    // A valid manifest with a 2 MiB string: accepted (no size rule on a prompt).
    let text = format!(
        r#"{{"template_id":"t","items":[{{"client_item_id":"a","input_data":{{"k":"{huge}"}}}}]}}"#
    );
    assert!(matches!(judge(text.as_bytes()), Verdict::Accepted { .. }));
    // As a field name, as an unknown kind, as a client_item_id with a `#`, unclosed.
    let cases = [
        format!(r#"{{"template_id":"t","{huge}":1,"items":[{{}}]}}"#),
        format!(r#"{{"kind":"{huge}","items":[{{}}]}}"#),
        format!(r#"{{"template_id":"t","items":[{{"{huge}":1}}]}}"#),
        format!(r#"{{"template_id":"t","items":[{{"client_item_id":"a"}}],"x":"{huge}"#),
    ];
    for (i, text) in cases.iter().enumerate() {
        let message = rejection(&judge(text.as_bytes())).to_string();
        assert!(
            message.len() < MAX_MESSAGE_CHARS * 2,
            "case {i}: {} bytes",
            message.len()
        );
    }
}

#[test]
fn invalid_utf8_inside_a_string_names_its_offset() {
    let mut bytes = br#"{"template_id":"t","items":[{"client_item_id":"a","prompt":"ok "#.to_vec();
    let offset = bytes.len();
    bytes.extend_from_slice(b"\xff\xfe\xc3\x28");
    bytes.extend_from_slice(br#""}]}"#);
    assert_eq!(
        rejection(&judge(&bytes)),
        ManifestRejection::NotUtf8 {
            valid_up_to: offset
        }
    );
    // An overlong encoding and a lone surrogate written as bytes.
    for bad in [&b"\xc0\xaf"[..], b"\xed\xa0\x80", b"\xf4\x90\x80\x80"] {
        let mut bytes = br#"{"template_id":""#.to_vec();
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(br#"","items":[{}]}"#);
        assert!(matches!(
            rejection(&judge(&bytes)),
            ManifestRejection::NotUtf8 { valid_up_to: 16 }
        ));
    }
    // A lone surrogate as an escape is valid JSON text but no string: rejected as JSON.
    let escaped = br#"{"template_id":"\ud800","items":[{}]}"#;
    assert!(matches!(
        rejection(&judge(escaped)),
        ManifestRejection::NotJson { .. }
    ));
}

#[test]
fn thousands_of_unknown_keys_give_one_short_message_with_a_suggestion() {
    let mut fields: Vec<String> = (0..5_000)
        .map(|i| format!(r#""unknown_{i}":{i}"#))
        .collect();
    fields.insert(0, r#""template_idd":"t""#.to_owned());
    let top = format!(r#"{{{},"items":[{{}}]}}"#, fields.join(","));
    let message = rejection(&judge(top.as_bytes())).to_string();
    assert_eq!(
        message,
        "unknown top-level field `template_idd`, did you mean `template_id`?"
    );
    let mut item_fields: Vec<String> = (0..5_000)
        .map(|i| format!(r#""unknown_{i}":{i}"#))
        .collect();
    item_fields.insert(0, r#""input_dat":{}"#.to_owned());
    let item = format!(
        r#"{{"template_id":"t","items":[{{"client_item_id":"a",{}}}]}}"#,
        item_fields.join(",")
    );
    match judge(item.as_bytes()) {
        Verdict::Rejected { reason, .. } => {
            let message = reason.to_string();
            assert!(message.contains("input_dat"), "{message}");
            assert!(message.len() < 200, "{message}");
        }
        Verdict::Accepted { manifest, .. } => {
            let item = &manifest.items[0];
            let message = format!("{item:?}");
            assert!(
                message.contains("input_dat"),
                "the item's rejection names the key"
            );
            assert!(message.contains("did you mean `input_data`"), "{message}");
        }
    }
}

/// The fastest of five judgements of each input, measured in turns (small, large,
/// small, ...) so that a burst of load on a shared machine hits both alike.
fn fastest_judgements(small: &[u8], large: &[u8]) -> (Duration, Duration) {
    use crate::pipeline::intake::validation::judging_on_one_thread as on_one_thread;
    // This thread's CPU time, all of the judgement on it: a busy machine preempts the
    // thread (which stretches the wall clock, and failed this test under load) but does
    // not add to the CPU time it uses.
    let time = |bytes: &[u8]| {
        on_one_thread(|| {
            let start = thread_cpu_time();
            let verdict = judge(bytes);
            let elapsed = thread_cpu_time().saturating_sub(start);
            drop(verdict);
            elapsed
        })
    };
    let (mut fastest_small, mut fastest_large) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        fastest_small = fastest_small.min(time(small));
        fastest_large = fastest_large.min(time(large));
    }
    (fastest_small, fastest_large)
}

/// The CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant.
    let failed = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0;
    assert!(!failed, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Ten times the input costs less than thirty times the CPU time (a quadratic step would
/// cost a hundred): for many items, many duplicate ids, many unknown keys in items, and
/// a long run of nesting just under the limit. Loose on purpose: the bound is far from
/// linear, and far from quadratic.
type Build = fn(usize) -> String;

/// Inputs that grow with `n`: many items, many items rejected, many unknown keys in one
/// item, deep nesting in every item.
fn hostile_builds() -> [(&'static str, Build); 4] {
    [
        ("items", |n| {
            let items: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"client_item_id":"id-{i}","input_data":{{"k":"v{i}"}}}}"#))
                .collect();
            format!(r#"{{"template_id":"t","items":[{}]}}"#, items.join(","))
        }),
        ("items rejected locally", |n| {
            let items: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"client_item_id":"id-{i}","custom_page_alias":"BAD {i}"}}"#))
                .collect();
            format!(r#"{{"template_id":"t","items":[{}]}}"#, items.join(","))
        }),
        ("unknown keys in the last item", |n| {
            let mut items: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"client_item_id":"{i}"}}"#))
                .collect();
            let keys: Vec<String> = (0..n).map(|i| format!(r#""zz{i}":1"#)).collect();
            items.push(format!("{{{}}}", keys.join(",")));
            format!(r#"{{"template_id":"t","items":[{}]}}"#, items.join(","))
        }),
        ("nested arrays in every item", |n| {
            let deep = nested(100, "[", "]");
            let items: Vec<String> = (0..n / 10)
                .map(|i| format!(r#"{{"client_item_id":"{i}","input_data":{{"k":{deep}}}}}"#))
                .collect();
            format!(r#"{{"template_id":"t","items":[{}]}}"#, items.join(","))
        }),
    ]
}

#[test]
fn judgement_time_grows_linearly_with_the_input() {
    for (what, build) in hostile_builds() {
        let small = build(1_000);
        let large = build(10_000);
        assert!(
            large.len() >= 9 * small.len(),
            "{what}: the large input is ten times the small"
        );
        let (small_time, large_time) = fastest_judgements(small.as_bytes(), large.as_bytes());
        let small_time = small_time.max(Duration::from_millis(1));
        assert!(
            large_time < small_time * 30,
            "{what}: {small_time:?} for {} bytes, {large_time:?} for {} bytes",
            small.len(),
            large.len()
        );
    }
}

/// Memory, measured exactly (this thread's peak bytes in use during the judgement): ten
/// times the input costs at most fifteen times the memory (a quadratic step would cost a
/// hundred), and never more than a small multiple of the input's own size.
#[test]
fn judgement_memory_grows_linearly_with_the_input() {
    for (what, build) in hostile_builds() {
        let small = build(1_000);
        let large = build(10_000);
        // On this thread alone: the meter counts this thread's allocations.
        use crate::pipeline::intake::validation::judging_on_one_thread as on_one_thread;
        let (_, small_peak) = on_one_thread(|| meter::peak_during(|| judge(small.as_bytes())));
        let (_, large_peak) = on_one_thread(|| meter::peak_during(|| judge(large.as_bytes())));
        eprintln!(
            "{what}: {} bytes -> peak {small_peak}; {} bytes -> peak {large_peak}",
            small.len(),
            large.len()
        );
        assert!(small_peak > 0, "{what}: the meter counts");
        assert!(
            large_peak <= small_peak * 15,
            "{what}: peak {small_peak} B for {} bytes, {large_peak} B for {} bytes",
            small.len(),
            large.len()
        );
        assert!(
            large_peak <= large.len() * 32,
            "{what}: peak {large_peak} B for {} bytes of input",
            large.len()
        );
    }
}
