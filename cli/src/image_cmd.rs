//! `vcuda image`: build the guest image from Debian packages.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use vmm::image::{self, BuildOptions};

/// Guest images: a Debian kernel and a busybox-static initramfs, cached under
/// $VCUDA_CACHE (default ~/.cache/vcuda).
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Download the packages (apt-get download), build the initramfs and, for kernels without
    /// virtio-mmio command-line devices, the vcuda_mmio module; run with `vcuda run --image NAME`.
    Build {
        /// Image name.
        #[arg(long, default_value = "default")]
        name: String,
        /// Kernel package or metapackage (use another kernel by naming its package).
        #[arg(long, default_value = "linux-image-amd64")]
        kernel_package: String,
        /// Add a host file to the initramfs (executable), e.g. `--add ./prog:/bin/prog`.
        #[arg(long, value_name = "HOST:GUEST")]
        add: Vec<String>,
    },
    /// Print the files of a built image.
    Show {
        #[arg(long, default_value = "default")]
        name: String,
    },
}

pub fn run(args: ImageArgs) -> Result<ExitCode, Box<dyn Error>> {
    match args.command {
        ImageCommand::Build {
            name,
            kernel_package,
            add,
        } => {
            let add = add
                .iter()
                .map(|a| image::parse_add(a))
                .collect::<Result<Vec<(PathBuf, String)>, _>>()?;
            let img = image::build(&BuildOptions {
                name: name.clone(),
                kernel_package,
                add,
            })?;
            println!(
                "built image `{name}`: {}, {}",
                img.kernel.display(),
                img.initrd.display()
            );
            println!("run it: vcuda run --image {name} -- /bin/uname -a");
        }
        ImageCommand::Show { name } => {
            let img = image::find(&name)?;
            println!("kernel  {}", img.kernel.display());
            println!("initrd  {}", img.initrd.display());
            println!("cmdline {}", img.cmdline);
        }
    }
    Ok(ExitCode::SUCCESS)
}
