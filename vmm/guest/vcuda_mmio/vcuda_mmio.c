// SPDX-License-Identifier: GPL-2.0
/*
 * vcuda_mmio: registers virtio-mmio platform devices from "SIZE@BASE:IRQ" strings, for guest
 * kernels built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (Debian's). The stock virtio_mmio
 * driver then binds to them exactly as it would to `virtio_mmio.device=` command-line devices.
 *
 *   insmod vcuda_mmio.ko devices=4K@0xc0001000:5,4K@0xc0002000:6
 *
 * The image's /init passes every `virtio_mmio.device=` value of /proc/cmdline.
 */
#include <linux/init.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/platform_device.h>

#define MAX_DEVICES 19

static char *devices[MAX_DEVICES];
static int num_devices;
module_param_array(devices, charp, &num_devices, 0444);
MODULE_PARM_DESC(devices, "virtio-mmio devices as SIZE@BASE:IRQ (as virtio_mmio.device=)");

static struct platform_device *pdevs[MAX_DEVICES];

static int __init vcuda_mmio_add(int id, char *spec)
{
	struct resource res[2] = {};
	unsigned long long base;
	unsigned int irq;
	char *at, *colon;
	long long size;

	size = memparse(spec, &at);
	if (size <= 0 || *at != '@')
		return -EINVAL;
	colon = strchr(at, ':');
	if (!colon)
		return -EINVAL;
	*colon = '\0';
	if (kstrtoull(at + 1, 0, &base) || kstrtouint(colon + 1, 0, &irq))
		return -EINVAL;
	res[0].flags = IORESOURCE_MEM;
	res[0].start = base;
	res[0].end = base + size - 1;
	res[1].flags = IORESOURCE_IRQ;
	res[1].start = res[1].end = irq;
	pdevs[id] = platform_device_register_resndata(NULL, "virtio-mmio", id, res, 2, NULL, 0);
	if (IS_ERR(pdevs[id])) {
		int err = PTR_ERR(pdevs[id]);

		pdevs[id] = NULL;
		return err;
	}
	pr_info("vcuda_mmio: virtio-mmio device %d at 0x%llx, irq %u\n", id, base, irq);
	return 0;
}

static int __init vcuda_mmio_init(void)
{
	int i, err;

	for (i = 0; i < num_devices; i++) {
		err = vcuda_mmio_add(i, devices[i]);
		if (err)
			pr_err("vcuda_mmio: bad device \"%s\": %d\n", devices[i], err);
	}
	return 0;
}

static void __exit vcuda_mmio_exit(void)
{
	int i;

	for (i = 0; i < MAX_DEVICES; i++)
		if (pdevs[i])
			platform_device_unregister(pdevs[i]);
}

module_init(vcuda_mmio_init);
module_exit(vcuda_mmio_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("virtio-mmio platform devices for vcuda guests");
