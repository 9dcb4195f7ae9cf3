//! The traffic model. Time advances in 5-minute slots; each (device, slot) draws its rows from
//! its own seeded generator, so a dataset is the same whatever format it is written in, and
//! devices can be generated independently (in parallel) with the same result.
//!
//! Normal traffic per device: expected inbound connections follow a diurnal curve (low at
//! night, peak at 13:00 UTC), lower at weekends, with a per-day factor and per-slot noise.
//! Clients come from a per-device population with Zipf-like popularity (a few heavy returning
//! customers, a long tail), plus a modest share of brand-new addresses; IPv6 clients too.
//! Around them: SYNs seen (`ConnectionAttempt`), TLS/HTTP sessions inspected (Zeek counters),
//! a few pings, and the device's own outbound noise (HTTPS, DNS, failures, hourly aggregated
//! reports).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal, Zipf};

use floodwatch_core::hash::{combine, hash_bytes, mix64};
use floodwatch_core::model::{ActionType, Ip};
use floodwatch_core::time::{NANOS_PER_DAY, NANOS_PER_HOUR, NANOS_PER_MIN, Nanos};

use crate::config::{SimConfig, SimProfile};
use crate::record::*;
use crate::scenario::{self, Effect, Flood, Label, Outage, Pool, Volume};

/// The generator's time step. Scenario windows are aligned to it.
pub(crate) const SLOT: Nanos = 5 * NANOS_PER_MIN;
const TICK: Nanos = 100; // Defender timestamps carry 100 ns ticks.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Web,
    Api,
    Mail,
}

impl Role {
    /// Share of peak traffic at the quietest hour.
    fn night(self) -> f64 {
        match self {
            Role::Web => 0.12,
            Role::Api => 0.30,
            Role::Mail => 0.20,
        }
    }

    fn weekend(self) -> f64 {
        match self {
            Role::Web => 0.70,
            Role::Api => 0.45,
            Role::Mail => 0.50,
        }
    }

    fn new_client_share(self) -> f64 {
        match self {
            Role::Web => 0.04,
            Role::Api => 0.01,
            Role::Mail => 0.03,
        }
    }

    fn v6_share(self) -> f64 {
        match self {
            Role::Web => 0.15,
            Role::Api => 0.05,
            Role::Mail => 0.10,
        }
    }
}

struct Spec {
    name: &'static str,
    group: &'static str,
    role: Role,
    /// Expected inbound connections per slot at the daily peak, scenarios profile, scale 1.
    peak: f64,
    process: u8,
    population: usize,
    zipf_s: f64,
}

/// The fixed device order; see [`SimConfig::devices`].
const DEVICE_SPECS: [Spec; 8] = [
    Spec {
        name: "web01.contoso.com",
        group: "Web Frontend",
        role: Role::Web,
        peak: 300.0,
        process: P_W3WP,
        population: 20_000,
        zipf_s: 1.05,
    },
    Spec {
        name: "web02.contoso.com",
        group: "Web Frontend",
        role: Role::Web,
        peak: 220.0,
        process: P_W3WP,
        population: 16_000,
        zipf_s: 1.05,
    },
    Spec {
        name: "web03.contoso.com",
        group: "Web Frontend",
        role: Role::Web,
        peak: 180.0,
        process: P_W3WP,
        population: 14_000,
        zipf_s: 1.05,
    },
    Spec {
        name: "web04.contoso.com",
        group: "Web Frontend",
        role: Role::Web,
        peak: 150.0,
        process: P_NGINX,
        population: 12_000,
        zipf_s: 1.05,
    },
    Spec {
        name: "api01.contoso.com",
        group: "API",
        role: Role::Api,
        peak: 200.0,
        process: P_DOTNET,
        population: 1_500,
        zipf_s: 0.9,
    },
    Spec {
        name: "mail01.contoso.com",
        group: "Mail",
        role: Role::Mail,
        peak: 80.0,
        process: P_TRANSPORT,
        population: 4_000,
        zipf_s: 1.0,
    },
    Spec {
        name: "web05.contoso.com",
        group: "New Services",
        role: Role::Web,
        peak: 120.0,
        process: P_NGINX,
        population: 8_000,
        zipf_s: 1.05,
    },
    Spec {
        name: "shop01.contoso.com",
        group: "New Services",
        role: Role::Web,
        peak: 100.0,
        process: P_W3WP,
        population: 8_000,
        zipf_s: 1.05,
    },
];

/// The `hard` profile's devices 8 and 9, before its further web servers: a national
/// service's portal with many returning visitors, and a web shop with a heavy day.
const HARD_SPECS: [Spec; 2] = [
    Spec {
        name: "portal01.contoso.com",
        group: "Citizen Portal",
        role: Role::Web,
        peak: 1_600.0,
        process: P_W3WP,
        population: 60_000,
        zipf_s: 1.05,
    },
    Spec {
        name: "store01.contoso.com",
        group: "Shop",
        role: Role::Web,
        peak: 3_000.0,
        process: P_NGINX,
        population: 80_000,
        zipf_s: 1.05,
    },
];

/// One simulated device and everything about it that does not change.
pub(crate) struct Device {
    pub name: String,
    pub id_hex: String,
    pub group: String,
    pub local_ip: Ip,
    pub(crate) role: Role,
    peak: f64,
    process: u8,
    /// First moment the device reports anything.
    pub(crate) appears: Nanos,
    pub(crate) population: Vec<Ip>,
    zipf: Option<Zipf<f64>>,
}

/// What changes as a device's traffic is generated: who it has seen, its `ReportId` counter.
#[derive(Clone, Debug)]
pub(crate) struct DeviceState {
    pub(crate) seen: Vec<bool>,
    pub(crate) seen_list: Vec<u32>,
    next_report: i64,
    /// Returning clients picked for a `Pool::Mixed` scenario when it started on this device,
    /// by tag (indices into the population), so the same addresses send in every slot.
    picked: Vec<(u16, Vec<u32>)>,
}

/// The simulated world: devices, botnets and scenarios.
pub(crate) struct World {
    pub devices: Vec<Device>,
    pub labels: Vec<Label>,
    pub(crate) effects: Vec<Effect>,
    pub(crate) botnets: Vec<Vec<Ip>>,
    outages: Vec<Outage>,
    monitor_ip: Ip,
    seed: u64,
    /// Volume multiplier of the profile times the user's scale.
    volume: f64,
    scale: f64,
    pub start: Nanos,
    pub end: Nanos,
}

fn rng_for(seed: u64, a: u64, b: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(combine(combine(mix64(seed), a), b))
}

/// A public-looking IPv4 address (no private, loopback, link-local, CGNAT or documentation
/// first octets).
fn public_v4(rng: &mut ChaCha8Rng) -> Ip {
    loop {
        let a: u8 = rng.random_range(1..=223);
        if matches!(a, 10 | 100 | 127 | 169 | 172 | 192 | 198 | 203) {
            continue;
        }
        return Ip::v4([a, rng.random(), rng.random(), rng.random_range(1..=254)]);
    }
}

/// A global-unicast IPv6 address in 2a00::/12 (where European ISPs live).
fn public_v6(rng: &mut ChaCha8Rng) -> Ip {
    let top: u128 = 0x2a00 | rng.random_range(0..0x10u128);
    let rest: u128 = rng.random::<u128>() & ((1u128 << 112) - 1);
    Ip(top << 112 | rest)
}

/// A few hosting ranges rented botnet servers come from.
const CLOUD_PREFIXES: [[u8; 2]; 6] = [
    [45, 134],
    [185, 220],
    [91, 92],
    [5, 188],
    [194, 26],
    [146, 70],
];

fn cloud_v4(rng: &mut ChaCha8Rng) -> Ip {
    let p = CLOUD_PREFIXES[rng.random_range(0..CLOUD_PREFIXES.len())];
    Ip::v4([p[0], p[1], rng.random(), rng.random_range(1..=254)])
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    if lambda > 1e7 {
        return lambda as u64;
    }
    match Poisson::new(lambda) {
        Ok(p) => {
            let x: f64 = p.sample(rng);
            x as u64
        }
        Err(_) => 0,
    }
}

fn ephemeral(rng: &mut ChaCha8Rng) -> u16 {
    rng.random_range(49_152..=65_535)
}

impl World {
    pub(crate) fn new(cfg: &SimConfig) -> World {
        let start = cfg.start_aligned();
        let end = cfg.end();
        let profile_volume = match cfg.profile {
            SimProfile::Scenarios | SimProfile::Hard => 1.0,
            SimProfile::Bench => 9.9,
        };
        let hard = cfg.profile == SimProfile::Hard;
        let fixed = if hard {
            DEVICE_SPECS.len() + HARD_SPECS.len()
        } else {
            DEVICE_SPECS.len()
        };
        let mut devices = Vec::with_capacity(cfg.devices);
        for i in 0..cfg.devices {
            let spec = match i.checked_sub(DEVICE_SPECS.len()) {
                None => DEVICE_SPECS.get(i),
                Some(j) if hard => HARD_SPECS.get(j),
                Some(_) => None,
            };
            let (name, group, role, peak, process, population, zipf_s) = match spec {
                Some(s) => (
                    s.name.to_owned(),
                    s.group,
                    s.role,
                    s.peak,
                    s.process,
                    s.population,
                    s.zipf_s,
                ),
                None => {
                    let n = i - fixed + 6;
                    let var = (hash_bytes(&n.to_le_bytes()) % 100) as f64;
                    (
                        format!("web{n:02}.contoso.com"),
                        "Web Frontend",
                        Role::Web,
                        120.0 + var,
                        P_W3WP,
                        10_000,
                        1.05,
                    )
                }
            };
            let appears = match (cfg.profile, i) {
                (SimProfile::Scenarios | SimProfile::Hard, scenario::WEB05) => {
                    start + scenario::WEB05_APPEARS
                }
                (SimProfile::Scenarios | SimProfile::Hard, scenario::SHOP01) => {
                    start + scenario::SHOP01_APPEARS
                }
                (SimProfile::Hard, scenario::WEB10) => start + scenario::WEB10_APPEARS,
                _ => start,
            };
            let population = match cfg.profile {
                SimProfile::Scenarios | SimProfile::Hard => population,
                SimProfile::Bench => population * 3,
            };
            let mut rng = rng_for(cfg.seed, i as u64, 0x706f_7075_6c61_7469);
            let v6 = role.v6_share();
            let pop: Vec<Ip> = (0..population)
                .map(|_| {
                    if rng.random_bool(v6) {
                        public_v6(&mut rng)
                    } else {
                        public_v4(&mut rng)
                    }
                })
                .collect();
            let h = hash_bytes(name.as_bytes());
            let id_hex = format!(
                "{:016x}{:016x}{:08x}",
                mix64(h),
                mix64(h ^ 1),
                mix64(h ^ 2) as u32
            );
            let gidx = match group {
                "Web Frontend" => 1,
                "API" => 2,
                "Mail" => 3,
                _ => 4,
            };
            devices.push(Device {
                name,
                id_hex,
                group: group.to_owned(),
                local_ip: Ip::v4([10, 1, gidx, 10 + (i % 240) as u8]),
                role,
                peak,
                process,
                appears,
                zipf: Zipf::new(population as f64, zipf_s).ok(),
                population: pop,
            });
        }
        let monitor_ip = Ip::v4([20, 42, 73, 5]);
        let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        let plan = scenario::plan(cfg, &names, monitor_ip);
        let botnets = plan
            .botnets
            .iter()
            .enumerate()
            .map(|(b, spec)| {
                let mut rng = rng_for(cfg.seed, 0xb07 + b as u64, 0x626f_746e_6574);
                let size = ((spec.size as f64 * cfg.scale).round() as usize).max(1);
                (0..size)
                    .map(|_| {
                        if rng.random_bool(spec.cloud_share) {
                            cloud_v4(&mut rng)
                        } else if rng.random_bool(spec.v6_share) {
                            public_v6(&mut rng)
                        } else {
                            public_v4(&mut rng)
                        }
                    })
                    .collect()
            })
            .collect();
        World {
            devices,
            labels: plan.labels,
            effects: plan.effects,
            botnets,
            outages: plan.outages,
            monitor_ip,
            seed: cfg.seed,
            volume: profile_volume * cfg.scale,
            scale: cfg.scale,
            start,
            end,
        }
    }

    pub(crate) fn new_states(&self) -> Vec<DeviceState> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceState {
                seen: vec![false; d.population.len()],
                seen_list: Vec::new(),
                next_report: 10_000 + (mix64(self.seed ^ i as u64) % 90_000) as i64,
                picked: Vec::new(),
            })
            .collect()
    }

    /// Slot start times of the dataset.
    pub(crate) fn slots(&self) -> impl Iterator<Item = Nanos> + use<> {
        let (s, e) = (self.start, self.end);
        (0..).map(move |k| s + k * SLOT).take_while(move |&t| t < e)
    }

    /// Expected inbound connections of a device in the slot starting at `t`.
    pub(crate) fn expected(&self, dev: usize, t: Nanos) -> f64 {
        let d = &self.devices[dev];
        let mid = t + SLOT / 2;
        let hour = mid.rem_euclid(NANOS_PER_DAY) as f64 / NANOS_PER_HOUR as f64;
        let day = mid.div_euclid(NANOS_PER_DAY);
        let shape = ((1.0 - (std::f64::consts::TAU * (hour - 1.0) / 24.0).cos()) / 2.0).powf(1.3);
        let night = d.role.night();
        let diurnal = night + (1.0 - night) * shape;
        let dow = (day + 4).rem_euclid(7); // 1970-01-01 was a Thursday; 0 = Sunday
        let week = if dow == 0 || dow == 6 {
            d.role.weekend()
        } else {
            1.0
        };
        let u = mix64(combine(self.seed, combine(dev as u64, day as u64))) as f64 / u64::MAX as f64;
        let dayf = 1.0 + 0.08 * (2.0 * u - 1.0);
        d.peak * self.volume * diurnal * week * dayf
    }

    /// Rows of every device in the slot starting at `t0`, in time order.
    pub(crate) fn slot(&self, states: &mut [DeviceState], t0: Nanos, out: &mut Vec<Row>) {
        out.clear();
        for (dev, st) in states.iter_mut().enumerate() {
            self.device_slot(dev, st, t0, out);
        }
        out.sort_unstable_by_key(|r| (r.ts, r.device, r.report_id));
    }

    /// Appends one device's rows for the slot starting at `t0` (unsorted).
    pub(crate) fn device_slot(
        &self,
        dev: usize,
        st: &mut DeviceState,
        t0: Nanos,
        out: &mut Vec<Row>,
    ) {
        let d = &self.devices[dev];
        if t0 + SLOT <= d.appears {
            return;
        }
        if self
            .outages
            .iter()
            .any(|o| o.device == dev && o.start <= t0 && t0 < o.end)
        {
            // The sensor is down: nothing reaches the table, not even the hourly roll-ups.
            return;
        }
        let slot_index = t0.div_euclid(SLOT);
        let mut g = Gen {
            rng: rng_for(self.seed, dev as u64 + 1, slot_index as u64),
            d,
            dev: dev as u16,
            st,
            t0: t0.max(d.appears),
            t1: t0 + SLOT,
            out,
        };
        if d.appears >= t0 {
            for port in [443u16, 80] {
                g.push(
                    ActionType::ListeningConnectionCreated,
                    Proto::Tcp,
                    Ip::v4([0, 0, 0, 0]),
                    None,
                    Some(port),
                    0,
                    d.process,
                    Extra::None,
                    0,
                );
            }
        }
        let lam = self.expected(dev, t0);
        let noise: f64 = g.rng.sample(StandardNormal);
        let n = poisson(&mut g.rng, lam * (0.08 * noise).exp());
        for _ in 0..n {
            let ip = g.client();
            g.normal_inbound(ip, 0);
        }
        if dev == scenario::WEB01 {
            // An uptime monitor checks the home page once a minute.
            for _ in 0..5 {
                g.accept(self.monitor_ip, 443, Proto::Tcp, 0, false);
            }
        }
        // Pings, mostly from known clients.
        for _ in 0..poisson(&mut g.rng, 1.5 * self.scale) {
            let ip = g.client();
            let pk = g.rng.random_range(1..=4);
            g.icmp(ip, pk, pk, 0);
        }
        if d.role == Role::Mail {
            // SNMP polling from the internal monitoring server.
            for _ in 0..poisson(&mut g.rng, 1.0 * self.scale) {
                let rp = ephemeral(&mut g.rng);
                g.push(
                    ActionType::InboundConnectionAccepted,
                    Proto::Udp,
                    Ip::v4([10, 0, 5, 20]),
                    Some(rp),
                    Some(161),
                    0,
                    P_SYSTEM,
                    Extra::None,
                    0,
                );
            }
        }
        g.outbound(lam);
        if t0.rem_euclid(NANOS_PER_HOUR) == 0 {
            g.aggregated_reports();
        }
        for e in self
            .effects
            .iter()
            .filter(|e| e.device == dev && e.start <= t0 && t0 < e.end)
        {
            self.effect(&mut g, e, lam);
        }
    }

    fn effect(&self, g: &mut Gen<'_>, e: &Effect, lam: f64) {
        let k = ((g.t0 - e.start) / SLOT) as usize;
        if !e.pattern.is_empty() && !e.pattern[k % e.pattern.len()] {
            return;
        }
        let ramp = if e.ramp > 1 {
            ((k + 1) as f64 / e.ramp as f64).min(1.0)
        } else {
            1.0
        };
        let conns = ramp
            * match e.volume {
                Volume::Absolute(x) => x * self.scale,
                Volume::Relative(m) => m * lam,
            };
        match &e.pool {
            Pool::Botnet(b) => {
                let pool = &self.botnets[*b];
                if pool.is_empty() {
                    return;
                }
                let (lo, hi) = e.per_source;
                let mean = (lo + hi) as f64 / 2.0;
                let n_src = ((conns / mean).round() as usize).clamp(1, pool.len());
                let offset = g.rng.random_range(0..pool.len());
                for j in 0..n_src {
                    let ip = pool[(offset + j) % pool.len()];
                    let c = g.rng.random_range(lo..=hi);
                    if e.flood == Flood::SynRollup {
                        g.syn_rollup(ip, c, e.tag);
                    } else {
                        for _ in 0..c {
                            g.flood(e.flood, ip, e.tag);
                        }
                    }
                }
            }
            Pool::Mixed {
                botnet,
                returning_share,
            } => {
                let bots = &self.botnets[*botnet];
                let share = returning_share.clamp(0.0, 0.95);
                let n_ret = (bots.len() as f64 * share / (1.0 - share)).round() as usize;
                let returning = g.st.pick_returning(e.tag, n_ret, &mut g.rng);
                let n = bots.len() + returning.len();
                if n == 0 {
                    return;
                }
                let share = returning.len() as f64 / n as f64;
                let (floor, top) = e.per_source;
                let a = heavy_exponent(n, conns, floor as f64, top as f64);
                let (mut bi, mut ri) = (0, 0);
                for j in 0..n {
                    // Interleaved: source j is returning when the running count of returning
                    // sources steps up, so both kinds hold every stretch of ranks.
                    let is_ret = ri < returning.len()
                        && (((j + 1) as f64 * share).floor() > (j as f64 * share).floor()
                            || bi >= bots.len());
                    let ip = if is_ret {
                        ri += 1;
                        g.d.population[returning[ri - 1] as usize]
                    } else {
                        bi += 1;
                        bots[bi - 1]
                    };
                    let x = top as f64 * ((j + 1) as f64).powf(-a) * g.rng.random_range(0.85..1.15);
                    let c = (x.round() as u32).max(floor);
                    for _ in 0..c {
                        g.flood(e.flood, ip, e.tag);
                    }
                }
            }
            Pool::Customers { new_share } => {
                for _ in 0..poisson(&mut g.rng, conns) {
                    let ip = if g.st.seen_list.is_empty() || g.rng.random_bool(*new_share) {
                        // Someone who never came before: an address outside the population.
                        if g.rng.random_bool(g.d.role.v6_share()) {
                            public_v6(&mut g.rng)
                        } else {
                            public_v4(&mut g.rng)
                        }
                    } else {
                        let i = g.st.seen_list[g.rng.random_range(0..g.st.seen_list.len())];
                        g.d.population[i as usize]
                    };
                    g.flood(e.flood, ip, e.tag);
                }
            }
            Pool::Spoofed => {
                for _ in 0..poisson(&mut g.rng, conns) {
                    let ip = public_v4(&mut g.rng);
                    g.flood(e.flood, ip, e.tag);
                }
            }
            Pool::Returning => {
                for _ in 0..poisson(&mut g.rng, conns) {
                    let ip = if !g.st.seen_list.is_empty() && g.rng.random_bool(0.92) {
                        let i = g.st.seen_list[g.rng.random_range(0..g.st.seen_list.len())];
                        g.d.population[i as usize]
                    } else {
                        g.client()
                    };
                    g.flood(e.flood, ip, e.tag);
                }
            }
            Pool::Fixed(ips) => {
                if ips.is_empty() {
                    return;
                }
                for _ in 0..poisson(&mut g.rng, conns) {
                    let ip = ips[g.rng.random_range(0..ips.len())];
                    g.flood(e.flood, ip, e.tag);
                }
            }
        }
    }
}

/// The exponent `a` for which `sum over r = 1..=n of max(floor, top x r^-a)` is `total`
/// (bisection; 0 when even every source at `top` falls short, large when `floor` each exceeds
/// it).
pub(crate) fn heavy_exponent(n: usize, total: f64, floor: f64, top: f64) -> f64 {
    let sum = |a: f64| -> f64 {
        (1..=n)
            .map(|r| (top * (r as f64).powf(-a)).max(floor))
            .sum()
    };
    let (mut lo, mut hi) = (0.0f64, 8.0f64);
    if sum(lo) <= total {
        return lo;
    }
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if sum(mid) > total {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

impl DeviceState {
    /// The returning clients of `tag`'s proxy flood: `n` distinct clients this device has
    /// already seen, drawn when the scenario first runs here and the same afterwards.
    fn pick_returning(&mut self, tag: u16, n: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
        if let Some((_, p)) = self.picked.iter().find(|p| p.0 == tag) {
            return p.clone();
        }
        let mut all = self.seen_list.clone();
        let n = n.min(all.len());
        for i in 0..n {
            let j = rng.random_range(i..all.len());
            all.swap(i, j);
        }
        all.truncate(n);
        self.picked.push((tag, all.clone()));
        all
    }
}

/// Row maker for one (device, slot).
struct Gen<'a> {
    rng: ChaCha8Rng,
    d: &'a Device,
    dev: u16,
    st: &'a mut DeviceState,
    t0: Nanos,
    t1: Nanos,
    out: &'a mut Vec<Row>,
}

impl Gen<'_> {
    fn ts(&mut self) -> Nanos {
        let ticks = ((self.t1 - self.t0) / TICK).max(1);
        self.t0 + self.rng.random_range(0..ticks) * TICK
    }

    #[allow(clippy::too_many_arguments)]
    fn push_at(
        &mut self,
        ts: Nanos,
        action: ActionType,
        proto: Proto,
        ip: Ip,
        rport: Option<u16>,
        lport: Option<u16>,
        url: u8,
        process: u8,
        extra: Extra,
        tag: u16,
    ) {
        self.st.next_report += 1;
        self.out.push(Row {
            ts,
            device: self.dev,
            action,
            proto,
            remote_ip: ip,
            remote_port: rport,
            local_port: lport,
            remote_url: url,
            report_id: self.st.next_report,
            process,
            extra,
            tag,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        action: ActionType,
        proto: Proto,
        ip: Ip,
        rport: Option<u16>,
        lport: Option<u16>,
        url: u8,
        process: u8,
        extra: Extra,
        tag: u16,
    ) {
        let ts = self.ts();
        self.push_at(
            ts, action, proto, ip, rport, lport, url, process, extra, tag,
        );
    }

    /// A client of this device: usually from its population (heavy-tailed), sometimes new.
    fn client(&mut self) -> Ip {
        let role = self.d.role;
        match &self.d.zipf {
            Some(z) if !self.rng.random_bool(role.new_client_share()) => {
                let r: f64 = z.sample(&mut self.rng);
                let i = (r as usize)
                    .saturating_sub(1)
                    .min(self.d.population.len() - 1);
                if !self.st.seen[i] {
                    self.st.seen[i] = true;
                    self.st.seen_list.push(i as u32);
                }
                self.d.population[i]
            }
            _ => {
                if self.rng.random_bool(role.v6_share()) {
                    public_v6(&mut self.rng)
                } else {
                    public_v4(&mut self.rng)
                }
            }
        }
    }

    fn normal_inbound(&mut self, ip: Ip, tag: u16) {
        let r: f64 = self.rng.random();
        match self.d.role {
            Role::Web => {
                if r < 0.88 {
                    let proto = if self.rng.random_bool(0.05) {
                        Proto::Udp
                    } else {
                        Proto::Tcp
                    };
                    self.accept(ip, 443, proto, tag, false);
                } else {
                    self.accept(ip, 80, Proto::Tcp, tag, false);
                }
            }
            Role::Api => self.accept(ip, 443, Proto::Tcp, tag, false),
            Role::Mail => {
                let port = if r < 0.5 {
                    25
                } else if r < 0.6 {
                    587
                } else if r < 0.95 {
                    443
                } else {
                    993
                };
                self.accept(ip, port, Proto::Tcp, tag, false);
            }
        }
    }

    fn process_for(&self, port: u16) -> u8 {
        match (self.d.role, port) {
            (Role::Mail, 443) => P_W3WP,
            _ => self.d.process,
        }
    }

    /// An accepted inbound connection, sometimes with its SYN seen and its session inspected.
    /// `light`: attack traffic, whose sessions carry little data.
    fn accept(&mut self, ip: Ip, port: u16, proto: Proto, tag: u16, light: bool) {
        let rport = ephemeral(&mut self.rng);
        let process = self.process_for(port);
        let ts = self.ts();
        if proto == Proto::Tcp && self.rng.random_bool(0.12) {
            let back = self.rng.random_range(10_000..500_000) * TICK;
            self.push_at(
                (ts - back).max(self.t0),
                ActionType::ConnectionAttempt,
                proto,
                ip,
                Some(rport),
                Some(port),
                0,
                process,
                Extra::None,
                tag,
            );
        }
        self.push_at(
            ts,
            ActionType::InboundConnectionAccepted,
            proto,
            ip,
            Some(rport),
            Some(port),
            0,
            process,
            Extra::None,
            tag,
        );
        let p_inspect = match (port, light) {
            (_, true) => 0.03,
            (443, false) => 0.08,
            (80, false) => 0.15,
            _ => 0.0,
        };
        if proto == Proto::Tcp && p_inspect > 0.0 && self.rng.random_bool(p_inspect) {
            let (orig, resp) = if light {
                (
                    self.rng.random_range(300..700),
                    self.rng.random_range(0..2_000),
                )
            } else {
                (
                    self.rng.random_range(500..4_000),
                    self.rng.random_range(2_000..200_000),
                )
            };
            let host = match self.d.role {
                Role::Api => 5,
                Role::Mail => 6,
                Role::Web => 4,
            };
            let (action, detail) = if port == 80 {
                (
                    ActionType::HttpConnectionInspected,
                    Detail::Http {
                        host,
                        status: if light { 503 } else { 200 },
                    },
                )
            } else {
                (
                    ActionType::SslConnectionInspected,
                    Detail::Ssl { sni: host },
                )
            };
            let extra = Extra::Inspected(Inspected {
                inbound: true,
                orig_bytes: orig,
                resp_bytes: resp,
                orig_pkts: orig / 1_200 + 3,
                resp_pkts: resp / 1_400 + 2,
                duration_ms: self.rng.random_range(20..30_000),
                detail,
            });
            let later = (ts + self.rng.random_range(1_000..20_000) * TICK).min(self.t1 - TICK);
            self.push_at(
                later,
                action,
                proto,
                ip,
                Some(rport),
                Some(port),
                0,
                process,
                extra,
                tag,
            );
        }
    }

    fn icmp(&mut self, ip: Ip, orig_pkts: u64, resp_pkts: u64, tag: u16) {
        let extra = Extra::Inspected(Inspected {
            inbound: true,
            orig_bytes: orig_pkts * if tag == 0 { 84 } else { 1_028 },
            resp_bytes: resp_pkts * 84,
            orig_pkts,
            resp_pkts,
            duration_ms: self.rng.random_range(1..60_000),
            detail: Detail::Icmp { itype: 8 },
        });
        self.push(
            ActionType::IcmpConnectionInspected,
            Proto::Icmp,
            ip,
            None,
            None,
            0,
            P_SYSTEM,
            extra,
            tag,
        );
    }

    /// A SYN flood source's slot as Defender rolls it up: its first attempt, then one inbound
    /// `ConnectionFailedAggregatedReport` standing for its other `count - 1` attempts.
    fn syn_rollup(&mut self, ip: Ip, count: u32, tag: u16) {
        let rport = self.rng.random_range(1_024..=65_535);
        let p = self.d.process;
        self.push(
            ActionType::ConnectionAttempt,
            Proto::Tcp,
            ip,
            Some(rport),
            Some(443),
            0,
            p,
            Extra::None,
            tag,
        );
        if count > 1 {
            self.push(
                ActionType::ConnectionFailedAggregatedReport,
                Proto::Tcp,
                ip,
                Some(rport),
                Some(443),
                0,
                p,
                Extra::Aggregated { unique: count - 1 },
                tag,
            );
        }
    }

    fn flood(&mut self, flood: Flood, ip: Ip, tag: u16) {
        match flood {
            Flood::Web => self.accept(ip, 443, Proto::Tcp, tag, true),
            Flood::Http => self.accept(ip, 80, Proto::Tcp, tag, true),
            Flood::SynRollup => self.syn_rollup(ip, 1, tag),
            Flood::Syn => {
                let rport = self.rng.random_range(1_024..=65_535);
                let p = self.d.process;
                self.push(
                    ActionType::ConnectionAttempt,
                    Proto::Tcp,
                    ip,
                    Some(rport),
                    Some(443),
                    0,
                    p,
                    Extra::None,
                    tag,
                );
                if self.rng.random_bool(0.03) {
                    self.push(
                        ActionType::ConnectionFailed,
                        Proto::Tcp,
                        ip,
                        Some(rport),
                        Some(443),
                        0,
                        p,
                        Extra::None,
                        tag,
                    );
                }
            }
            Flood::Udp => {
                let rport = self.rng.random_range(1_024..=65_535);
                let lport = self.rng.random_range(1..=65_535);
                self.push(
                    ActionType::InboundConnectionAccepted,
                    Proto::Udp,
                    ip,
                    Some(rport),
                    Some(lport),
                    0,
                    P_SYSTEM,
                    Extra::None,
                    tag,
                );
            }
            Flood::Icmp => {
                let pk = self.rng.random_range(50..400);
                let resp = self.rng.random_range(0..5);
                self.icmp(ip, pk, resp, tag);
            }
        }
    }

    /// The device's own traffic: updates, telemetry, DNS, the odd failure.
    fn outbound(&mut self, lam: f64) {
        let n = poisson(&mut self.rng, 4.0 + 0.1 * lam);
        for _ in 0..n {
            let r: f64 = self.rng.random();
            let lport = ephemeral(&mut self.rng);
            if r < 0.5 {
                let url: u8 = [1u8, 2, 3, 8, 9, 10, 11][self.rng.random_range(0..7)];
                let ip = Ip::v4([20, 190, (url as u32 * 37 % 256) as u8, 10 + url]);
                let p = if self.rng.random_bool(0.5) {
                    P_SENSE
                } else {
                    P_SVCHOST
                };
                self.push(
                    ActionType::ConnectionSuccess,
                    Proto::Tcp,
                    ip,
                    Some(443),
                    Some(lport),
                    url,
                    p,
                    Extra::None,
                    0,
                );
            } else if r < 0.7 {
                let q = self.rng.random_range(1..DOMAINS.len() as u8);
                let extra = Extra::Inspected(Inspected {
                    inbound: false,
                    orig_bytes: self.rng.random_range(30..80),
                    resp_bytes: self.rng.random_range(60..300),
                    orig_pkts: 1,
                    resp_pkts: 1,
                    duration_ms: self.rng.random_range(1..40),
                    detail: Detail::Dns { query: q },
                });
                self.push(
                    ActionType::DnsConnectionInspected,
                    Proto::Udp,
                    Ip::v4([10, 0, 0, 53]),
                    Some(53),
                    Some(lport),
                    0,
                    P_SVCHOST,
                    extra,
                    0,
                );
            } else if r < 0.8 {
                self.push(
                    ActionType::ConnectionSuccess,
                    Proto::Udp,
                    Ip::v4([10, 0, 0, 53]),
                    Some(53),
                    Some(lport),
                    0,
                    P_SVCHOST,
                    Extra::None,
                    0,
                );
            } else if r < 0.9 {
                let ip = public_v4(&mut self.rng);
                let rp = if self.rng.random_bool(0.7) {
                    443
                } else {
                    8_080
                };
                self.push(
                    ActionType::ConnectionFailed,
                    Proto::Tcp,
                    ip,
                    Some(rp),
                    Some(lport),
                    0,
                    P_SVCHOST,
                    Extra::None,
                    0,
                );
            } else {
                self.push(
                    ActionType::ConnectionRequest,
                    Proto::Tcp,
                    Ip::v4([20, 190, 160, 14]),
                    Some(443),
                    Some(lport),
                    2,
                    P_SENSE,
                    Extra::None,
                    0,
                );
            }
        }
    }

    /// The hourly roll-ups Defender sends instead of every repeated connection.
    fn aggregated_reports(&mut self) {
        let ok = self.rng.random_range(5..120);
        let failed = self.rng.random_range(1..15);
        let ip = Ip::v4([20, 190, 160, 14]);
        self.push(
            ActionType::ConnectionSuccessAggregatedReport,
            Proto::Tcp,
            ip,
            Some(443),
            None,
            2,
            P_SENSE,
            Extra::Aggregated { unique: ok },
            0,
        );
        self.push(
            ActionType::ConnectionFailedAggregatedReport,
            Proto::Tcp,
            ip,
            Some(443),
            None,
            2,
            P_SENSE,
            Extra::Aggregated { unique: failed },
            0,
        );
    }
}
