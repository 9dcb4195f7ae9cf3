//! Parser and aggregation throughput on the fixed sample (`floodwatch_scan::sample`).
//! `cargo bench -p floodwatch-scan`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floodwatch_core::{Aggregator, BinWidth, ClassifyConfig, Event, Profile};
use floodwatch_scan::{Chunk, Scanner, Worker, aggregate_lines, sample};

fn agg(p: Profile) -> Aggregator {
    Aggregator::new(BinWidth::FIVE_MINUTES, ClassifyConfig::default()).with_profile(p)
}

fn benches(c: &mut Criterion) {
    let data = sample::lines(20_000);
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("scan_row (parse only)", |b| {
        let mut a = agg(Profile::SeedOnly);
        let mut s = Scanner::new();
        b.iter(|| {
            for l in &lines {
                black_box(s.scan_row(l, &mut a));
            }
        })
    });
    let events: Vec<Event> = {
        let mut a = agg(Profile::Full);
        let mut s = Scanner::new();
        lines.iter().filter_map(|l| s.scan_row(l, &mut a)).collect()
    };
    for (name, p) in [
        ("aggregate seed-only", Profile::SeedOnly),
        ("aggregate full", Profile::Full),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut a = agg(p);
                for n in [
                    "web01.contoso.com",
                    "web02.contoso.com",
                    "web03.contoso.com",
                    "web04.contoso.com",
                    "web05.contoso.com",
                    "web06.contoso.com",
                ] {
                    a.device(n);
                }
                a.add_batch(&events);
                black_box(a.finish())
            })
        });
    }
    g.bench_function("aggregate_lines seed-only, 1 worker", |b| {
        b.iter(|| {
            let mut w = [Worker::new(agg(Profile::SeedOnly))];
            let chunk = Chunk {
                data: &data,
                source: "sample",
                first_line: 1,
                base_offset: 0,
            };
            aggregate_lines(chunk, &mut w, 1 << 20, &|_, _, _, _| {});
            black_box(w[0].agg.devices.len())
        })
    });
    g.finish();
}

criterion_group!(scan, benches);
criterion_main!(scan);
