//! The boot path, top to bottom: check config → VM and memory → irqchip/PIT → devices →
//! kernel, command line and boot tables → vCPUs → event loop until the guest exits.

use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::IoEventAddress;
use tracing::{debug, info, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use crate::arch::x86_64::layout::*;
use crate::arch::x86_64::{mptable, regs};
use crate::boot::{self, BootError};
use crate::config::{ConfigError, DeviceKind, VmConfig, DEFAULT_CMDLINE};
use crate::devices::boot_timer::BootTimer;
use crate::devices::bus::BusError;
use crate::devices::debug_exit::{DebugExit, DEBUG_EXIT_LEN, DEBUG_EXIT_PORT};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{SerialDevice, SerialOut, COM1_BASE, COM1_LEN};
use crate::devices::virtio::echo::EchoDevice;
use crate::devices::virtio::mmio::{reg, MmioError, MmioTransport};
use crate::devices::virtio::queued::Queued;
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::devices::{Bus, BusDevice};
use crate::exit::{ExitSignal, VmExit};
use crate::vstate::vcpu::{self, VcpuError, VcpuRunner};
use crate::vstate::vm::{Vm, VmError};
use host_executor::cpu::CpuConfig;
use host_executor::select::{open_backend, BackendChoice};
use host_executor::{Executor, ExecutorConfig};
use virtio_cuda::device::CudaDevice;
use virtio_cuda::service::RemoteExecutor;
use virtio_gpu::VirtioGpu;

/// Everything that can stop the VMM before or while the guest runs.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("boot tables: {0}")]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    #[error("virtio-mmio: {0}")]
    Mmio(#[from] MmioError),
    #[error("device placement: {0}")]
    Bus(#[from] BusError),
    #[error("cannot create serial output {path}: {source}")]
    SerialOut {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("event loop: {0}")]
    Io(#[from] std::io::Error),
    #[error("virtio-cuda executor: {0}")]
    Executor(String),
    #[error("virtio device: {0}")]
    Device(String),
    #[error("KVM refused to {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
}

/// How a run ended, with the timings `--boot-timer` and the benchmarks report.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub exit: VmExit,
    /// VMM start → vCPU 0 enters the guest for the first time.
    pub guest_entry: Option<Duration>,
    /// VMM start → the guest's first boot-timer write.
    pub boot_timer: Option<Duration>,
    /// Part of the startup spent in KVM creating the memory slots (grows with guest RAM where
    /// KVM keeps per-page shadow-MMU metadata, as on the PVM host).
    pub memory_slots: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Event-loop tokens of the exit eventfd and of stdin; queue eventfds use their index.
const EXIT_TOKEN: u64 = u64::MAX;
const STDIN_TOKEN: u64 = u64::MAX - 1;

struct QueueEvent {
    transport: Arc<Mutex<MmioTransport>>,
    queue: u32,
}

fn make_device(kind: DeviceKind, config: &VmConfig) -> Result<Box<dyn VirtioDevice>, BuildError> {
    Ok(match kind {
        DeviceKind::Echo => Box::new(EchoDevice::new()),
        DeviceKind::Cuda => match &config.executor {
            Some(path) => Box::new(Queued::new(CudaDevice::new(RemoteExecutor::new(path)))),
            None => {
                let selected = open_backend(BackendChoice::Auto, CpuConfig::single_tenant())
                    .map_err(|e| BuildError::Executor(e.to_string()))?;
                if let Some(note) = &selected.note {
                    info!("virtio-cuda: {note}");
                }
                Box::new(Queued::new(CudaDevice::new(Executor::new(
                    selected.backend,
                    ExecutorConfig::default(),
                ))))
            }
        },
        DeviceKind::Gpu => Box::new(Queued::new(
            VirtioGpu::new(virtio_gpu::GpuConfig::default(), config.display_spec()?)
                .map_err(BuildError::Device)?,
        )),
    })
}

fn serial_out(config: &VmConfig) -> Result<SerialOut, BuildError> {
    Ok(match &config.serial_out {
        Some(path) => Box::new(File::create(path).map_err(|source| BuildError::SerialOut {
            path: path.clone(),
            source,
        })?),
        None => Box::new(std::io::stdout()),
    })
}

/// Boots the VM described by `config` and runs it to completion. `start` is the VMM's start
/// (the reference point of the boot timings).
pub fn run(config: &VmConfig, start: Instant) -> Result<RunReport, BuildError> {
    config.validate()?;
    let lap = |step: &str| debug!("{step}: {:.3} ms after VMM start", ms(start.elapsed()));
    let vm = Vm::new(config.mem)?;
    lap("VM and memory created");
    let mem = vm.memory().clone();
    let exit = ExitSignal::new()?;
    let kvm_err = |what| move |source| BuildError::Kvm { what, source };

    // Legacy devices on the IO bus.
    let mut io_bus = Bus::new();
    let serial_irq = EventFd::new(EFD_NONBLOCK)?;
    vm.fd()
        .register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(kvm_err("register the serial irqfd"))?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        serial_irq,
        serial_out(config)?,
    )));
    io_bus.insert(COM1_BASE, COM1_LEN, serial.clone())?;
    io_bus.insert(
        I8042_BASE,
        I8042_LEN,
        Arc::new(Mutex::new(I8042::new(exit.clone()))),
    )?;
    let debug_exit = Arc::new(Mutex::new(DebugExit::new(exit.clone())));
    io_bus.insert(DEBUG_EXIT_PORT, DEBUG_EXIT_LEN, debug_exit)?;

    // Boot timer and virtio-mmio devices on the MMIO bus.
    let mut mmio_bus = Bus::new();
    let timer = BootTimer::new(start, config.boot_timer);
    let boot_timer = timer.handle();
    mmio_bus.insert(
        BOOT_TIMER_ADDR,
        BOOT_TIMER_SIZE,
        Arc::new(Mutex::new(timer)),
    )?;
    let mut announced = Vec::new();
    let mut queue_events = Vec::new();
    for (i, kind) in config.devices.iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let irq = VIRTIO_IRQ_FIRST + i as u32;
        let irqfd = EventFd::new(EFD_NONBLOCK)?;
        vm.fd()
            .register_irqfd(&irqfd, irq)
            .map_err(kvm_err("register a virtio irqfd"))?;
        let transport = MmioTransport::new(
            make_device(*kind, config)?,
            mem.clone(),
            Interrupt::new(irqfd),
        )?;
        for (q, evt) in transport.queue_evts().iter().enumerate() {
            vm.fd()
                .register_ioevent(
                    evt,
                    &IoEventAddress::Mmio(base + reg::QUEUE_NOTIFY),
                    q as u32,
                )
                .map_err(kvm_err("register a queue-notify ioeventfd"))?;
        }
        let transport = Arc::new(Mutex::new(transport));
        let queues = transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue_evts()
            .len();
        for q in 0..queues {
            queue_events.push(QueueEvent {
                transport: transport.clone(),
                queue: q as u32,
            });
        }
        let as_bus: Arc<Mutex<dyn BusDevice>> = transport;
        mmio_bus.insert(base, VIRTIO_MMIO_SIZE, as_bus)?;
        announced.push((base, irq));
        info!("virtio-mmio device {kind:?} at {base:#x}, irq {irq}");
    }

    lap("devices created");

    // Kernel, command line, boot information.
    let cmdline = boot::build_cmdline(
        config.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE),
        &announced,
        &config.guest_args,
    )?;
    let entry = boot::load(
        &mem,
        config.mem,
        &config.kernel,
        config.initrd.as_deref(),
        &cmdline,
    )?;
    debug!("kernel entry {:#x} ({:?})", entry.addr, entry.mode);
    if entry.linux {
        if let Some(reason) = crate::vstate::vm::linux_boot_blocker() {
            eprintln!("vcuda: warning: {reason}");
        }
    }
    regs::write_boot_tables(&mem, entry.mode)?;
    mptable::write(&mem, config.vcpus)?;

    lap("kernel loaded");

    // vCPUs.
    vcpu::install_kick_handler()?;
    let cpuid = vcpu::supported_cpuid(&vm)?;
    let io_bus = Arc::new(io_bus);
    let mmio_bus = Arc::new(mmio_bus);
    let entered = Arc::new(OnceLock::new());
    let mut runners = Vec::new();
    for id in 0..config.vcpus {
        let fd = vcpu::create(&vm, &cpuid, id, config.vcpus, entry)?;
        runners.push(VcpuRunner {
            id,
            fd,
            io_bus: io_bus.clone(),
            mmio_bus: mmio_bus.clone(),
            exit: exit.clone(),
            entered: entered.clone(),
            start,
        });
    }
    lap("vCPUs created");
    let mut threads = Vec::new();
    for runner in runners {
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{}", runner.id))
            .spawn(move || runner.run())?;
        threads.push(handle);
    }

    let deadline = config
        .timeout_secs
        .map(|s| start + Duration::from_secs_f64(s));
    let loop_result = event_loop(&exit, &queue_events, &serial, deadline);
    if let Err(e) = &loop_result {
        exit.report(VmExit::VcpuError {
            cpu: 0,
            reason: format!("event loop failed: {e}"),
        });
    }
    stop_vcpus(threads);
    if let Err(e) = serial.lock().unwrap_or_else(|e| e.into_inner()).flush() {
        warn!("cannot flush serial output: {e}");
    }
    loop_result?;
    Ok(RunReport {
        exit: exit.get().unwrap_or(VmExit::PowerOff),
        guest_entry: entered.get().copied(),
        boot_timer: boot_timer.get().copied(),
        memory_slots: vm.memory_slot_time(),
    })
}

/// Whether reading stdin is safe: not a terminal, or a terminal whose foreground process group
/// is ours (a background `vcuda run &` reading its terminal would be stopped by SIGTTIN).
fn stdin_is_ours() -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only inspect fd 0 and the process; no memory.
    unsafe { libc::isatty(0) == 0 || libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Forwards what is readable on stdin to the serial port; returns false at end of input.
fn forward_stdin(serial: &Mutex<SerialDevice>) -> bool {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a stack buffer of the length passed; fd 0 stays open for the process.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    match usize::try_from(n) {
        Ok(0) => false,
        Ok(n) => {
            let mut serial = serial.lock().unwrap_or_else(|e| e.into_inner());
            serial.enqueue_input(&buf[..n]);
            true
        }
        Err(_) => std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted,
    }
}

/// The VMM's event loop: queue notifications (ioeventfds) go to their device, stdin goes to the
/// serial port; returns when a VM exit was reported or the deadline passed.
fn event_loop(
    exit: &ExitSignal,
    queue_events: &[QueueEvent],
    serial: &Mutex<SerialDevice>,
    deadline: Option<Instant>,
) -> Result<(), std::io::Error> {
    let epoll = Epoll::new()?;
    // Regular files and /dev/null cannot be polled (or are at EOF at once): then no input.
    if stdin_is_ours() {
        if let Err(e) = epoll.ctl(
            ControlOperation::Add,
            0,
            EpollEvent::new(EventSet::IN, STDIN_TOKEN),
        ) {
            debug!("stdin is not forwarded to the guest: {e}");
        }
    }
    epoll.ctl(
        ControlOperation::Add,
        std::os::fd::AsRawFd::as_raw_fd(exit.eventfd()),
        EpollEvent::new(EventSet::IN, EXIT_TOKEN),
    )?;
    for (i, qe) in queue_events.iter().enumerate() {
        let transport = qe.transport.lock().unwrap_or_else(|e| e.into_inner());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&transport.queue_evts()[qe.queue as usize]);
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, i as u64),
        )?;
    }
    let mut events = vec![EpollEvent::default(); queue_events.len() + 2];
    loop {
        if exit.is_set() {
            return Ok(());
        }
        let timeout_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    exit.report(VmExit::Timeout);
                    return Ok(());
                }
                i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
            }
            None => -1,
        };
        let n = match epoll.wait(timeout_ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == EXIT_TOKEN {
                continue;
            }
            if token == STDIN_TOKEN {
                if !forward_stdin(serial) {
                    epoll.ctl(ControlOperation::Delete, 0, EpollEvent::default())?;
                }
                continue;
            }
            let Some(qe) = queue_events.get(token as usize) else {
                continue;
            };
            let mut transport = qe.transport.lock().unwrap_or_else(|e| e.into_inner());
            // A failed read means the counter was already drained: nothing to do.
            if transport.queue_evts()[qe.queue as usize].read().is_ok() {
                transport.notify(qe.queue);
            }
        }
    }
}

/// Kicks every vCPU thread out of KVM_RUN (the exit is already reported, so they stop) and
/// joins them. Kicks repeat until each thread is gone, so one sent before KVM_RUN is not lost.
fn stop_vcpus(threads: Vec<JoinHandle<()>>) {
    for handle in threads {
        while !handle.is_finished() {
            if let Err(e) = handle.kill(vcpu::kick_signal()) {
                warn!("cannot kick a vCPU thread: {e}");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if handle.join().is_err() {
            warn!("a vCPU thread panicked");
        }
    }
}
