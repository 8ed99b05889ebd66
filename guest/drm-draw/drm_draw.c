// SPDX-License-Identifier: GPL-2.0
/*
 * drm_draw: draws a known pattern through the stock DRM/KMS interface of the first DRM card,
 * for the QEMU virtio-gpu harness (scripts/qemu-gpu.sh, tests/tests/qemu_gpu.rs).
 *
 *   drm_draw [/dev/dri/card0]
 *
 * 1. picks the first connected connector, its preferred mode and a CRTC,
 * 2. creates a dumb buffer (CREATE_DUMB, 32 bpp), wraps it in a framebuffer (ADDFB, depth 24,
 *    i.e. XRGB8888), maps it (MAP_DUMB + mmap) and draws pattern A,
 * 3. SETCRTC: scanout of the framebuffer (the driver transfers and flushes all of it),
 * 4. draws pattern B into the centre rectangle and calls DIRTYFB with that one clip rectangle
 *    (the driver transfers and flushes the damaged rectangle),
 * 5. waits a moment so the device consumes the flush before the caller powers off.
 *
 * The patterns (kept in sync with tests/tests/qemu_gpu.rs), for a W x H mode, 0x00RRGGBB:
 *   A(x, y) = R: x * 255 / (W - 1), G: y * 255 / (H - 1), B: 0xff on 16x16 checker squares
 *             where (x / 16 + y / 16) is odd, else 0x00
 *   B(x, y) = A(x, y) ^ 0x00ffffff inside [W/4, 3W/4) x [H/4, 3H/4)
 * The final frame is A with B in the rectangle.
 *
 * Freestanding of libdrm and of the kernel's DRM headers: the UAPI structures and ioctl numbers
 * are spelled out below (include/uapi/drm/drm.h and drm_mode.h, Linux 6.1). Static, so it runs
 * from a bare initramfs. Prints "drm_draw: ok WxH" on success; exits non-zero with a message
 * otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct drm_mode_card_res {
	uint64_t fb_id_ptr, crtc_id_ptr, connector_id_ptr, encoder_id_ptr;
	uint32_t count_fbs, count_crtcs, count_connectors, count_encoders;
	uint32_t min_width, max_width, min_height, max_height;
};

struct drm_mode_modeinfo {
	uint32_t clock;
	uint16_t hdisplay, hsync_start, hsync_end, htotal, hskew;
	uint16_t vdisplay, vsync_start, vsync_end, vtotal, vscan;
	uint32_t vrefresh;
	uint32_t flags;
	uint32_t type;
	char name[32];
};

struct drm_mode_get_connector {
	uint64_t encoders_ptr, modes_ptr, props_ptr, prop_values_ptr;
	uint32_t count_modes, count_props, count_encoders;
	uint32_t encoder_id, connector_id, connector_type, connector_type_id;
	uint32_t connection, mm_width, mm_height, subpixel;
	uint32_t pad;
};

struct drm_mode_crtc {
	uint64_t set_connectors_ptr;
	uint32_t count_connectors;
	uint32_t crtc_id, fb_id, x, y, gamma_size, mode_valid;
	struct drm_mode_modeinfo mode;
};

struct drm_mode_fb_cmd {
	uint32_t fb_id, width, height, pitch, bpp, depth, handle;
};

struct drm_clip_rect {
	unsigned short x1, y1, x2, y2;
};

struct drm_mode_fb_dirty_cmd {
	uint32_t fb_id, flags, color, num_clips;
	uint64_t clips_ptr;
};

struct drm_mode_create_dumb {
	uint32_t height, width, bpp, flags, handle, pitch;
	uint64_t size;
};

struct drm_mode_map_dumb {
	uint32_t handle, pad;
	uint64_t offset;
};

#define DRM_IOCTL_BASE 'd'
#define DRM_IOWR(nr, type) _IOWR(DRM_IOCTL_BASE, nr, type)
#define DRM_IOCTL_MODE_GETRESOURCES DRM_IOWR(0xA0, struct drm_mode_card_res)
#define DRM_IOCTL_MODE_SETCRTC DRM_IOWR(0xA2, struct drm_mode_crtc)
#define DRM_IOCTL_MODE_GETCONNECTOR DRM_IOWR(0xA7, struct drm_mode_get_connector)
#define DRM_IOCTL_MODE_ADDFB DRM_IOWR(0xAE, struct drm_mode_fb_cmd)
#define DRM_IOCTL_MODE_DIRTYFB DRM_IOWR(0xB1, struct drm_mode_fb_dirty_cmd)
#define DRM_IOCTL_MODE_CREATE_DUMB DRM_IOWR(0xB2, struct drm_mode_create_dumb)
#define DRM_IOCTL_MODE_MAP_DUMB DRM_IOWR(0xB3, struct drm_mode_map_dumb)

#define DRM_MODE_CONNECTED 1
#define DRM_MODE_TYPE_PREFERRED (1 << 3)

static int fd = -1;

static void die(const char *what)
{
	fprintf(stderr, "drm_draw: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void xioctl(unsigned long req, void *arg, const char *what)
{
	int r;

	do {
		r = ioctl(fd, req, arg);
	} while (r == -1 && (errno == EINTR || errno == EAGAIN));
	if (r == -1)
		die(what);
}

static uint32_t pattern_a(uint32_t x, uint32_t y, uint32_t w, uint32_t h)
{
	uint32_t r = x * 255 / (w - 1), g = y * 255 / (h - 1);
	uint32_t b = ((x / 16 + y / 16) & 1) ? 0xff : 0x00;

	return (r << 16) | (g << 8) | b;
}

static int in_rect(uint32_t x, uint32_t y, uint32_t w, uint32_t h)
{
	return x >= w / 4 && x < 3 * w / 4 && y >= h / 4 && y < 3 * h / 4;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/dev/dri/card0";
	struct drm_mode_card_res res;
	uint32_t conn_ids[8], crtc_ids[8], enc_ids[8], fb_ids[8];
	struct drm_mode_modeinfo modes[64], mode;
	struct drm_mode_get_connector conn;
	uint32_t conn_id = 0, crtc_id, i, x, y, w, h;
	double t0 = now();

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die(path);

	memset(&res, 0, sizeof(res));
	xioctl(DRM_IOCTL_MODE_GETRESOURCES, &res, "GETRESOURCES (counts)");
	if (res.count_connectors == 0 || res.count_crtcs == 0) {
		fprintf(stderr, "drm_draw: no connector or CRTC\n");
		return 1;
	}
	if (res.count_connectors > 8 || res.count_crtcs > 8 || res.count_encoders > 8 ||
	    res.count_fbs > 8) {
		fprintf(stderr, "drm_draw: too many DRM objects\n");
		return 1;
	}
	res.connector_id_ptr = (uintptr_t)conn_ids;
	res.crtc_id_ptr = (uintptr_t)crtc_ids;
	res.encoder_id_ptr = (uintptr_t)enc_ids;
	res.fb_id_ptr = (uintptr_t)fb_ids;
	xioctl(DRM_IOCTL_MODE_GETRESOURCES, &res, "GETRESOURCES");
	crtc_id = crtc_ids[0];

	memset(&mode, 0, sizeof(mode));
	for (i = 0; i < res.count_connectors && !conn_id; i++) {
		uint32_t m;

		memset(&conn, 0, sizeof(conn));
		conn.connector_id = conn_ids[i];
		xioctl(DRM_IOCTL_MODE_GETCONNECTOR, &conn, "GETCONNECTOR (counts)");
		if (conn.connection != DRM_MODE_CONNECTED || conn.count_modes == 0)
			continue;
		if (conn.count_modes > 64)
			conn.count_modes = 64;
		conn.modes_ptr = (uintptr_t)modes;
		conn.count_props = 0;
		conn.count_encoders = 0;
		xioctl(DRM_IOCTL_MODE_GETCONNECTOR, &conn, "GETCONNECTOR");
		mode = modes[0];
		for (m = 0; m < conn.count_modes && m < 64; m++) {
			if (modes[m].type & DRM_MODE_TYPE_PREFERRED) {
				mode = modes[m];
				break;
			}
		}
		conn_id = conn.connector_id;
	}
	if (!conn_id) {
		fprintf(stderr, "drm_draw: no connected connector with a mode\n");
		return 1;
	}
	w = mode.hdisplay;
	h = mode.vdisplay;
	if (w < 2 || h < 2) {
		fprintf(stderr, "drm_draw: mode %ux%u too small\n", w, h);
		return 1;
	}
	printf("drm_draw: connector %u crtc %u mode %s %ux%u (%u modes)\n", conn_id, crtc_id,
	       mode.name, w, h, conn.count_modes);

	struct drm_mode_create_dumb create = { .height = h, .width = w, .bpp = 32 };

	xioctl(DRM_IOCTL_MODE_CREATE_DUMB, &create, "CREATE_DUMB");
	struct drm_mode_fb_cmd fb = {
		.width = w, .height = h, .pitch = create.pitch, .bpp = 32, .depth = 24,
		.handle = create.handle,
	};
	xioctl(DRM_IOCTL_MODE_ADDFB, &fb, "ADDFB");
	struct drm_mode_map_dumb map = { .handle = create.handle };

	xioctl(DRM_IOCTL_MODE_MAP_DUMB, &map, "MAP_DUMB");
	uint8_t *px = mmap(NULL, create.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, map.offset);

	if (px == MAP_FAILED)
		die("mmap");
	printf("drm_draw: dumb buffer handle %u pitch %u size %llu, fb %u\n", create.handle,
	       create.pitch, (unsigned long long)create.size, fb.fb_id);

	for (y = 0; y < h; y++) {
		uint32_t *row = (uint32_t *)(px + (size_t)y * create.pitch);

		for (x = 0; x < w; x++)
			row[x] = pattern_a(x, y, w, h);
	}

	struct drm_mode_crtc crtc = {
		.set_connectors_ptr = (uintptr_t)&conn_id,
		.count_connectors = 1,
		.crtc_id = crtc_id,
		.fb_id = fb.fb_id,
		.mode_valid = 1,
		.mode = mode,
	};
	xioctl(DRM_IOCTL_MODE_SETCRTC, &crtc, "SETCRTC");
	printf("drm_draw: SETCRTC done (pattern A)\n");

	for (y = h / 4; y < 3 * h / 4; y++) {
		uint32_t *row = (uint32_t *)(px + (size_t)y * create.pitch);

		for (x = w / 4; x < 3 * w / 4; x++)
			row[x] = in_rect(x, y, w, h) ? pattern_a(x, y, w, h) ^ 0x00ffffff : row[x];
	}
	struct drm_clip_rect clip = { w / 4, h / 4, 3 * w / 4, 3 * h / 4 };
	struct drm_mode_fb_dirty_cmd dirty = {
		.fb_id = fb.fb_id, .num_clips = 1, .clips_ptr = (uintptr_t)&clip,
	};
	xioctl(DRM_IOCTL_MODE_DIRTYFB, &dirty, "DIRTYFB");
	printf("drm_draw: DIRTYFB done (pattern B in %u,%u-%u,%u)\n", clip.x1, clip.y1, clip.x2,
	       clip.y2);

	/* The flush is queued, not necessarily consumed: give the device a moment before the
	 * caller powers the machine off. */
	usleep(500 * 1000);
	printf("drm_draw: ok %ux%u in %.2f s\n", w, h, now() - t0);
	return 0;
}
