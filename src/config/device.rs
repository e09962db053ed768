//! Choosing the compute device for a run.
//!
//! `auto` must never train on a software rasteriser by accident: a machine
//! with only Mesa's lavapipe has a Vulkan adapter, and wgpu would happily pick
//! it and run 15x slower than flex. So `auto` takes wgpu only when an adapter
//! reports itself as real GPU hardware, and says what it chose.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// CUDA if built in and present, else a hardware wgpu adapter, else flex.
    #[default]
    Auto,
    /// burn's pure-Rust CPU backend.
    Flex,
    /// burn's wgpu backend (Vulkan/Metal); any adapter, including software ones.
    Wgpu,
    /// burn's CUDA backend (build with `--features cuda`).
    Cuda,
}

/// The device a run trains on, with a human description for logs and results.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub device: Device,
    pub kind: DeviceChoice,
    pub description: String,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "flex" | "cpu" => Ok(Self::Flex),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(Error::Config(format!(
                "unknown device `{s}` (expected auto, flex, wgpu or cuda)"
            ))),
        }
    }
}

/// One wgpu adapter as the driver describes it.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub name: String,
    pub backend: String,
    /// False for CPU (software) adapters such as lavapipe or llvmpipe.
    pub hardware: bool,
    pub kind: AdapterKind,
}

/// What kind of device an adapter is: burn numbers GPUs within a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    Discrete,
    Integrated,
    Virtual,
    Cpu,
    Other,
}

/// Lists the wgpu adapters this machine offers (empty without the `wgpu` feature).
pub fn wgpu_adapters() -> Vec<Adapter> {
    #[cfg(feature = "wgpu")]
    {
        // Only the native GPU APIs: the GL backend would probe for a display
        // server and print errors on a headless machine.
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if std::env::var_os("WGPU_BACKEND").is_none() {
            desc.backends = wgpu::Backends::PRIMARY;
        }
        let instance = wgpu::Instance::new(desc);
        let adapters = block_on(instance.enumerate_adapters(desc_backends()));
        adapters
            .iter()
            .map(|a| {
                let info = a.get_info();
                Adapter {
                    name: info.name.clone(),
                    backend: format!("{:?}", info.backend),
                    hardware: info.device_type != wgpu::DeviceType::Cpu,
                    kind: match info.device_type {
                        wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
                        wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
                        wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
                        wgpu::DeviceType::Cpu => AdapterKind::Cpu,
                        wgpu::DeviceType::Other => AdapterKind::Other,
                    },
                }
            })
            .collect()
    }
    #[cfg(not(feature = "wgpu"))]
    {
        Vec::new()
    }
}

#[cfg(feature = "wgpu")]
fn desc_backends() -> wgpu::Backends {
    match std::env::var_os("WGPU_BACKEND") {
        Some(_) => wgpu::Backends::all().with_env(),
        None => wgpu::Backends::PRIMARY,
    }
}

/// wgpu's adapter listing is async only for the web; natively it is ready at
/// once, so a spin on a no-op waker is enough and avoids an executor dependency.
#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// Whether the kernel exposes any GPU (DRM render nodes or NVIDIA devices).
fn gpu_device_nodes() -> bool {
    let any = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(prefix)))
        })
    };
    cfg!(target_os = "macos") || any("/dev/dri", "renderD") || any("/dev", "nvidia")
}

fn cuda_present() -> bool {
    cfg!(feature = "cuda") && std::path::Path::new("/proc/driver/nvidia/version").exists()
}

/// The devices a data-parallel run splits its batches over, from
/// `--devices`: `flex`, `wgpu` (the best adapter), `wgpu:N` (the N-th
/// adapter wgpu lists; a software one is burn's CPU kind, so `wgpu:0,wgpu:0`
/// lists lavapipe twice) or `cuda:N`. The first holds the model.
pub fn choose_many(specs: &[String]) -> Result<Vec<Chosen>> {
    specs
        .iter()
        .map(|s| {
            let (name, index) = match s.split_once(':') {
                Some((n, i)) => (
                    n,
                    Some(i.parse::<usize>().map_err(|_| {
                        Error::Config(format!("--devices: `{s}`: expected NAME or NAME:INDEX"))
                    })?),
                ),
                None => (s.as_str(), None),
            };
            match (name.parse::<DeviceChoice>()?, index) {
                (DeviceChoice::Wgpu, Some(i)) => wgpu_index(i),
                #[cfg(feature = "cuda")]
                (DeviceChoice::Cuda, Some(i)) => Ok(Chosen {
                    device: Device::cuda(i),
                    kind: DeviceChoice::Cuda,
                    description: format!("cuda:{i}"),
                }),
                (DeviceChoice::Flex | DeviceChoice::Auto, Some(_)) => Err(Error::Config(format!(
                    "--devices: `{s}`: only wgpu and cuda devices take an index"
                ))),
                (choice, _) => choose(choice),
            }
        })
        .collect()
}

/// The `i`-th adapter wgpu lists.
#[cfg(feature = "wgpu")]
fn wgpu_index(i: usize) -> Result<Chosen> {
    let adapters = wgpu_adapters();
    let a = adapters.get(i).ok_or_else(|| {
        Error::Runtime(format!(
            "--devices: wgpu:{i}, but wgpu lists {} adapter(s): {:?}",
            adapters.len(),
            adapters.iter().map(|a| &a.name).collect::<Vec<_>>()
        ))
    })?;
    use burn::tensor::DeviceKind;
    let mut c = wgpu_on(a)?;
    // burn numbers GPUs within their kind: the N-th listed adapter is the
    // j-th of its kind.
    let j = adapters[..i].iter().filter(|b| b.kind == a.kind).count();
    c.device = Device::wgpu(match a.kind {
        AdapterKind::Discrete => DeviceKind::DiscreteGpu(j),
        AdapterKind::Integrated => DeviceKind::IntegratedGpu(j),
        AdapterKind::Virtual => DeviceKind::VirtualGpu(j),
        AdapterKind::Cpu => DeviceKind::Cpu,
        AdapterKind::Other => DeviceKind::DefaultDevice,
    });
    c.description = format!("wgpu:{i} ({})", c.description);
    Ok(c)
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_index(_: usize) -> Result<Chosen> {
    wgpu_on(&Adapter {
        name: String::new(),
        backend: String::new(),
        hardware: false,
        kind: AdapterKind::Other,
    })
}

pub fn choose(choice: DeviceChoice) -> Result<Chosen> {
    match choice {
        DeviceChoice::Flex => Ok(flex()),
        DeviceChoice::Cuda => cuda(),
        DeviceChoice::Wgpu => wgpu_any(),
        DeviceChoice::Auto => {
            if cuda_present() {
                return cuda();
            }
            // Without GPU device nodes there is no hardware adapter to find,
            // and probing would only wake the software driver (and its noise).
            let nodes = gpu_device_nodes();
            if let Some(a) = nodes
                .then(wgpu_adapters)
                .unwrap_or_default()
                .into_iter()
                .find(|a| a.hardware)
            {
                let mut c = wgpu_on(&a)?;
                c.description += ", chosen by auto";
                return Ok(c);
            }
            let mut c = flex();
            c.description = "flex (CPU), chosen by auto: no hardware GPU adapter found".into();
            Ok(c)
        }
    }
}

fn flex() -> Chosen {
    Chosen {
        device: Device::flex(),
        kind: DeviceChoice::Flex,
        description: format!("flex (CPU, {} threads)", rayon::current_num_threads()),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Chosen> {
    Ok(Chosen {
        device: Device::cuda(0),
        kind: DeviceChoice::Cuda,
        description: "cuda:0".into(),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Chosen> {
    Err(Error::Runtime(
        "this build has no CUDA backend; rebuild with `--features cuda`".into(),
    ))
}

/// The best adapter: hardware first, else whatever the driver offers.
fn wgpu_any() -> Result<Chosen> {
    let adapters = wgpu_adapters();
    match adapters
        .iter()
        .find(|a| a.hardware)
        .or_else(|| adapters.first())
    {
        Some(a) => wgpu_on(a),
        None => Err(Error::Runtime(format!(
            "no wgpu adapter found. {VULKAN_HINT}"
        ))),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_on(first: &Adapter) -> Result<Chosen> {
    let kind = if first.hardware {
        burn::tensor::DeviceKind::DefaultDevice
    } else {
        burn::tensor::DeviceKind::Cpu
    };
    let soft = if first.hardware {
        ""
    } else {
        " — a software adapter: fine for tests, far slower than flex for training"
    };
    Ok(Chosen {
        device: Device::wgpu(kind),
        kind: DeviceChoice::Wgpu,
        description: format!("wgpu on {} ({}){soft}", first.name, first.backend),
    })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_on(_: &Adapter) -> Result<Chosen> {
    Err(Error::Runtime(
        "this build has no wgpu backend; rebuild with the default features".into(),
    ))
}

/// What to tell someone whose machine has no Vulkan driver at all.
pub const VULKAN_HINT: &str = "Install a Vulkan driver: on Debian/Ubuntu `apt-get install -y mesa-vulkan-drivers` \
     gives Mesa's software driver (lavapipe), enough for the tests; `.ci/test` does this for you.";
