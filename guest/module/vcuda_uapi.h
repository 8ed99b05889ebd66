/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * /dev/vcuda* user ABI: the virtio-cuda guest driver (docs/PROTOCOL.md §7).
 */
#ifndef _UAPI_VCUDA_H
#define _UAPI_VCUDA_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Return once the request is queued; the device sends no response. */
#define VCUDA_CALL_ASYNC	(1U << 0)

struct vcuda_call {
	__u64 frame;		/* user pointer: request frame (header + body) */
	__u32 frame_len;
	__u32 flags;		/* VCUDA_CALL_* */
	__u64 data_in;		/* user pointer: H2D data window, or 0 */
	__u64 data_in_len;
	__u64 data_out;		/* user pointer: D2H data window, or 0 */
	__u64 data_out_len;
	__u64 resp;		/* user pointer: buffer for response frames */
	__u32 resp_cap;
	__u32 resp_len;		/* out: bytes of response frames */
};

#define VCUDA_IOC_CALL	_IOWR('V', 1, struct vcuda_call)

#endif /* _UAPI_VCUDA_H */
