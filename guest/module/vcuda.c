// SPDX-License-Identifier: GPL-2.0
/*
 * virtio-cuda guest driver: binds the virtio device 0xC0DA and exposes /dev/vcudaN.
 *
 * Each open file is one session of the vcuda protocol (docs/PROTOCOL.md §7). VCUDA_IOC_CALL
 * turns one request frame into one descriptor chain:
 *
 *   readable:  envelope (16 B) + frame | H2D data window (pinned user pages)
 *   writable:  response buffer (one descriptor) | D2H data window (pinned user pages)
 *
 * Data windows are the caller's own pages, pinned for the duration of the call: the host
 * reads and writes them in place. Asynchronous calls without data windows return once queued;
 * everything else waits for the device (polling the used ring briefly first), killably: a
 * process killed while waiting leaves its request to be freed when the device completes it.
 * Releasing the file sends a close-session envelope.
 */

#include <linux/completion.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <asm/unaligned.h>

#include "vcuda_uapi.h"

#define VIRTIO_ID_VCUDA		0xC0DA
#define VCUDA_PROTOCOL_VERSION	1
#define VCUDA_ENV_MAGIC		0x56435544
#define VCUDA_ENV_FRAME		0
#define VCUDA_ENV_CLOSE		1
#define VCUDA_ENV_LEN		16
#define VCUDA_HDR_LEN		16
/* Largest request frame and response buffer (docs/PROTOCOL.md: 64 MiB + 64 KiB bodies). */
#define VCUDA_MAX_FRAME		((64U << 20) + (64U << 10) + VCUDA_HDR_LEN)

/* Config space offsets. */
#define VCUDA_CFG_VERSION	0
#define VCUDA_CFG_MAX_SESSIONS	4
#define VCUDA_CFG_MAX_WINDOW	8

static unsigned int poll_us = 20;
module_param(poll_us, uint, 0644);
MODULE_PARM_DESC(poll_us, "Microseconds to poll the used ring before sleeping (default 20)");

struct vcuda_dev {
	struct virtio_device *vdev;
	struct virtqueue *vq;
	spinlock_t lock;		/* the virtqueue, @removed, request completion */
	wait_queue_head_t space;	/* waiters for ring space */
	struct miscdevice misc;
	char name[16];
	int index;
	u64 max_window;
	atomic64_t next_session;
	bool removed;
	struct kref ref;
};

struct vcuda_file {
	struct vcuda_dev *vd;
	u64 session;
};

struct vcuda_window {
	struct page **pages;
	unsigned long npages;
	struct sg_table sgt;
	bool write;			/* the device writes it (D2H) */
};

struct vcuda_req {
	struct vcuda_dev *vd;
	struct completion done;
	struct work_struct free_work;
	bool async;			/* nobody waits: free on completion */
	bool orphan;			/* the waiter was killed: free on completion */
	bool completed;
	unsigned int used_len;
	void *buf;			/* envelope + frame */
	size_t buf_len;
	struct sg_table buf_sgt;
	void *resp;
	size_t resp_cap;
	struct scatterlist resp_sg;
	struct vcuda_window in, out;
};

static DEFINE_IDA(vcuda_ida);

static void vcuda_dev_free(struct kref *ref)
{
	struct vcuda_dev *vd = container_of(ref, struct vcuda_dev, ref);

	ida_free(&vcuda_ida, vd->index);
	kfree(vd);
}

/* ---- buffers and windows ---- */

/* One kernel buffer as an sg table: one entry if physically contiguous, else its pages. */
static int vcuda_kbuf_sg(void *buf, size_t len, struct sg_table *sgt)
{
	unsigned long first = (unsigned long)buf & PAGE_MASK;
	unsigned long npages = DIV_ROUND_UP((unsigned long)buf + len, PAGE_SIZE) -
			       first / PAGE_SIZE;
	struct page **pages;
	unsigned long i;
	int err;

	if (!is_vmalloc_addr(buf)) {
		err = sg_alloc_table(sgt, 1, GFP_KERNEL);
		if (err)
			return err;
		sg_set_buf(sgt->sgl, buf, len);
		return 0;
	}
	pages = kvmalloc_array(npages, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return -ENOMEM;
	for (i = 0; i < npages; i++)
		pages[i] = vmalloc_to_page((void *)(first + i * PAGE_SIZE));
	err = sg_alloc_table_from_pages(sgt, pages, npages, offset_in_page(buf), len,
					GFP_KERNEL);
	kvfree(pages);
	return err;
}

static void vcuda_window_release(struct vcuda_window *w)
{
	if (!w->pages)
		return;
	sg_free_table(&w->sgt);
	if (w->write)
		unpin_user_pages_dirty_lock(w->pages, w->npages, true);
	else
		unpin_user_pages(w->pages, w->npages);
	kvfree(w->pages);
	w->pages = NULL;
}

/* Pins the user range [uaddr, uaddr + len) and describes it as an sg table. */
static int vcuda_window_pin(struct vcuda_window *w, u64 uaddr, u64 len, bool write,
			    u64 max_len)
{
	unsigned long start, npages;
	long pinned;
	int err;

	if (!len)
		return 0;
	if (len > max_len || uaddr + len < uaddr)
		return -E2BIG;
	start = uaddr & PAGE_MASK;
	npages = DIV_ROUND_UP(uaddr + len, PAGE_SIZE) - start / PAGE_SIZE;
	w->pages = kvmalloc_array(npages, sizeof(*w->pages), GFP_KERNEL);
	if (!w->pages)
		return -ENOMEM;
	w->write = write;
	pinned = pin_user_pages_fast(start, npages, write ? FOLL_WRITE : 0, w->pages);
	if (pinned < 0) {
		err = pinned;
		goto free_pages;
	}
	if (pinned != npages) {
		unpin_user_pages(w->pages, pinned);
		err = -EFAULT;
		goto free_pages;
	}
	w->npages = npages;
	err = sg_alloc_table_from_pages(&w->sgt, w->pages, npages, offset_in_page(uaddr), len,
					GFP_KERNEL);
	if (err) {
		unpin_user_pages(w->pages, npages);
		goto free_pages;
	}
	return 0;

free_pages:
	kvfree(w->pages);
	w->pages = NULL;
	return err;
}

static void vcuda_req_free(struct vcuda_req *r)
{
	vcuda_window_release(&r->in);
	vcuda_window_release(&r->out);
	if (r->buf_sgt.sgl)
		sg_free_table(&r->buf_sgt);
	kvfree(r->buf);
	kfree(r->resp);
	kref_put(&r->vd->ref, vcuda_dev_free);
	kfree(r);
}

static void vcuda_req_free_work(struct work_struct *work)
{
	vcuda_req_free(container_of(work, struct vcuda_req, free_work));
}

static struct vcuda_req *vcuda_req_alloc(struct vcuda_dev *vd, u32 op, u64 session,
					 size_t frame_len)
{
	struct vcuda_req *r;
	__le32 *env;

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return NULL;
	r->buf_len = VCUDA_ENV_LEN + frame_len;
	r->buf = kvmalloc(r->buf_len, GFP_KERNEL);
	if (!r->buf) {
		kfree(r);
		return NULL;
	}
	env = r->buf;
	env[0] = cpu_to_le32(VCUDA_ENV_MAGIC);
	env[1] = cpu_to_le32(op);
	*(__le64 *)(env + 2) = cpu_to_le64(session);
	init_completion(&r->done);
	INIT_WORK(&r->free_work, vcuda_req_free_work);
	kref_get(&vd->ref);
	r->vd = vd;
	return r;
}

/* ---- the virtqueue ---- */

/* Takes completed chains off the used ring. Called with vd->lock held. */
static void vcuda_reap_locked(struct vcuda_dev *vd)
{
	struct vcuda_req *r;
	unsigned int len;
	bool any = false;

	do {
		virtqueue_disable_cb(vd->vq);
		while ((r = virtqueue_get_buf(vd->vq, &len))) {
			any = true;
			r->used_len = len;
			r->completed = true;
			if (r->async || r->orphan)
				schedule_work(&r->free_work);
			else
				complete(&r->done);
		}
	} while (!virtqueue_enable_cb(vd->vq) && !virtqueue_is_broken(vd->vq));
	if (any)
		wake_up_all(&vd->space);
}

static void vcuda_vq_done(struct virtqueue *vq)
{
	struct vcuda_dev *vd = vq->vdev->priv;
	unsigned long flags;

	spin_lock_irqsave(&vd->lock, flags);
	if (!vd->removed)
		vcuda_reap_locked(vd);
	spin_unlock_irqrestore(&vd->lock, flags);
}

static bool vcuda_has_space(struct vcuda_dev *vd, unsigned int needed)
{
	unsigned long flags;
	bool ok;

	spin_lock_irqsave(&vd->lock, flags);
	ok = vd->removed || vd->vq->num_free >= needed;
	spin_unlock_irqrestore(&vd->lock, flags);
	return ok;
}

/*
 * Queues @r and kicks the device. Waits (killably) while the ring is full. With @killable
 * false (file release) waits at most a second.
 */
static int vcuda_submit(struct vcuda_dev *vd, struct vcuda_req *r, bool killable)
{
	struct scatterlist *sgs[4];
	unsigned int out_n = 0, in_n = 0, total;
	unsigned long flags;
	bool notify, too_long;
	int err;

	sgs[out_n++] = r->buf_sgt.sgl;
	total = r->buf_sgt.nents;
	if (r->in.pages) {
		sgs[out_n++] = r->in.sgt.sgl;
		total += r->in.sgt.nents;
	}
	if (r->resp) {
		sgs[out_n + in_n++] = &r->resp_sg;
		total++;
	}
	if (r->out.pages) {
		sgs[out_n + in_n++] = r->out.sgt.sgl;
		total += r->out.sgt.nents;
	}
	/*
	 * A chain longer than the ring fits only as an indirect table (allocated by
	 * virtqueue_add_sgs with GFP_ATOMIC, as we hold the queue's spinlock).
	 */
	too_long = total > virtqueue_get_vring_size(vd->vq);
	if (too_long && !virtio_has_feature(vd->vdev, VIRTIO_RING_F_INDIRECT_DESC))
		return -E2BIG;

	for (;;) {
		spin_lock_irqsave(&vd->lock, flags);
		if (vd->removed) {
			spin_unlock_irqrestore(&vd->lock, flags);
			return -ENODEV;
		}
		err = virtqueue_add_sgs(vd->vq, sgs, out_n, in_n, r, GFP_ATOMIC);
		notify = !err && virtqueue_kick_prepare(vd->vq);
		spin_unlock_irqrestore(&vd->lock, flags);
		if (!err)
			break;
		if (err != -ENOSPC)
			return err;
		if (too_long)
			return -ENOMEM;	/* the indirect table could not be allocated */
		if (killable) {
			err = wait_event_killable(vd->space, vcuda_has_space(vd, total));
			if (err)
				return err;
		} else if (!wait_event_timeout(vd->space, vcuda_has_space(vd, total), HZ)) {
			return -ETIMEDOUT;
		}
	}
	if (notify)
		virtqueue_notify(vd->vq);
	return 0;
}

/* Waits for a submitted request: polls the used ring for @poll_us, then sleeps killably. */
static int vcuda_wait(struct vcuda_dev *vd, struct vcuda_req *r)
{
	ktime_t until = ktime_add_us(ktime_get(), poll_us);
	unsigned long flags;
	int err;

	while (!completion_done(&r->done) && ktime_before(ktime_get(), until)) {
		spin_lock_irqsave(&vd->lock, flags);
		if (!vd->removed)
			vcuda_reap_locked(vd);
		spin_unlock_irqrestore(&vd->lock, flags);
		cpu_relax();
	}
	err = wait_for_completion_killable(&r->done);
	if (!err)
		return 0;
	spin_lock_irqsave(&vd->lock, flags);
	if (!r->completed) {
		/* The device still owns the buffers: the completion path frees them. */
		r->orphan = true;
		spin_unlock_irqrestore(&vd->lock, flags);
		return -EINTR;
	}
	spin_unlock_irqrestore(&vd->lock, flags);
	return 0;
}

/* Bytes of whole response frames at the start of @buf (@len bytes valid). */
static u32 vcuda_resp_frames(const u8 *buf, u32 len)
{
	u32 at = 0, body;

	while (at + VCUDA_HDR_LEN <= len) {
		body = get_unaligned_le32(buf + at + 12);
		if (body > len - at - VCUDA_HDR_LEN)
			break;
		at += VCUDA_HDR_LEN + body;
	}
	return at;
}

/* ---- the character device ---- */

/*
 * Fire-and-forget frames without data windows, possibly several back to back (a batching
 * client): one chain each, so one system call can queue many launches. resp_len reports the
 * bytes of whole frames queued, also on error, so the caller can resume after a failure.
 */
static long vcuda_send_frames(struct vcuda_file *f, const struct vcuda_call *c,
			      struct vcuda_call __user *uarg)
{
	struct vcuda_dev *vd = f->vd;
	u8 hdr[VCUDA_HDR_LEN];
	struct vcuda_req *r;
	u32 done = 0, len;
	int err = 0;

	while (done < c->frame_len) {
		err = -EINVAL;
		if (c->frame_len - done < VCUDA_HDR_LEN)
			break;
		err = -EFAULT;
		if (copy_from_user(hdr, u64_to_user_ptr(c->frame + done), sizeof(hdr)))
			break;
		err = -EINVAL;
		len = get_unaligned_le32(hdr + 12);
		if (len > c->frame_len - done - VCUDA_HDR_LEN)
			break;
		len += VCUDA_HDR_LEN;
		err = -ENOMEM;
		r = vcuda_req_alloc(vd, VCUDA_ENV_FRAME, f->session, len);
		if (!r)
			break;
		err = -EFAULT;
		if (!copy_from_user(r->buf + VCUDA_ENV_LEN, u64_to_user_ptr(c->frame + done), len))
			err = vcuda_kbuf_sg(r->buf, r->buf_len, &r->buf_sgt);
		if (!err) {
			r->async = true;
			err = vcuda_submit(vd, r, true);
		}
		if (err) {
			vcuda_req_free(r);
			break;
		}
		/* @r now belongs to the completion path. */
		done += len;
	}
	if (put_user(done, &uarg->resp_len))
		return -EFAULT;
	return err;
}

static long vcuda_call(struct vcuda_file *f, struct vcuda_call __user *uarg)
{
	struct vcuda_dev *vd = f->vd;
	struct vcuda_call c;
	struct vcuda_req *r;
	bool wait;
	u32 resp_len;
	int err;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.flags & ~VCUDA_CALL_ASYNC)
		return -EINVAL;
	if (c.frame_len < VCUDA_HDR_LEN || c.frame_len > VCUDA_MAX_FRAME)
		return -EINVAL;
	wait = !(c.flags & VCUDA_CALL_ASYNC) || c.data_in_len || c.data_out_len;
	if (!wait)
		return vcuda_send_frames(f, &c, uarg);
	if (!(c.flags & VCUDA_CALL_ASYNC) && !c.resp_cap)
		return -EINVAL;

	r = vcuda_req_alloc(vd, VCUDA_ENV_FRAME, f->session, c.frame_len);
	if (!r)
		return -ENOMEM;
	err = -EFAULT;
	if (copy_from_user(r->buf + VCUDA_ENV_LEN, u64_to_user_ptr(c.frame), c.frame_len))
		goto free;
	err = vcuda_kbuf_sg(r->buf, r->buf_len, &r->buf_sgt);
	if (err)
		goto free;
	if (c.resp_cap) {
		r->resp_cap = min_t(size_t, c.resp_cap, KMALLOC_MAX_SIZE);
		r->resp = kmalloc(r->resp_cap, GFP_KERNEL | __GFP_NOWARN);
		err = -ENOMEM;
		if (!r->resp)
			goto free;
		sg_init_one(&r->resp_sg, r->resp, r->resp_cap);
	}
	err = vcuda_window_pin(&r->in, c.data_in, c.data_in_len, false, vd->max_window);
	if (err)
		goto free;
	err = vcuda_window_pin(&r->out, c.data_out, c.data_out_len, true, vd->max_window);
	if (err)
		goto free;

	err = vcuda_submit(vd, r, true);
	if (err)
		goto free;
	err = vcuda_wait(vd, r);
	if (err)
		return err;	/* orphaned: freed on completion */

	resp_len = 0;
	if (r->resp) {
		resp_len = vcuda_resp_frames(r->resp, min_t(u32, r->used_len, r->resp_cap));
		if (resp_len && copy_to_user(u64_to_user_ptr(c.resp), r->resp, resp_len)) {
			err = -EFAULT;
			goto free;
		}
	}
	err = 0;
	if (put_user(resp_len, &uarg->resp_len))
		err = -EFAULT;
	else if (!(c.flags & VCUDA_CALL_ASYNC) && !resp_len)
		err = -EIO;	/* the device rejected the chain */
free:
	vcuda_req_free(r);
	return err;
}

static long vcuda_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case VCUDA_IOC_CALL:
		return vcuda_call(file->private_data, (struct vcuda_call __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int vcuda_open(struct inode *inode, struct file *file)
{
	struct vcuda_dev *vd = container_of(file->private_data, struct vcuda_dev, misc);
	struct vcuda_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	kref_get(&vd->ref);
	f->vd = vd;
	f->session = atomic64_inc_return(&vd->next_session);
	file->private_data = f;
	return 0;
}

static int vcuda_release(struct inode *inode, struct file *file)
{
	struct vcuda_file *f = file->private_data;
	struct vcuda_dev *vd = f->vd;
	struct vcuda_req *r;
	int err;

	r = vcuda_req_alloc(vd, VCUDA_ENV_CLOSE, f->session, 0);
	if (r) {
		r->async = true;
		err = vcuda_kbuf_sg(r->buf, r->buf_len, &r->buf_sgt);
		if (!err)
			err = vcuda_submit(vd, r, false);
		if (err) {
			/* A removed device's sessions are gone with it; @vd->vdev may be too. */
			if (err != -ENODEV)
				pr_warn("vcuda: session %llu not closed on the host (%d)\n",
					f->session, err);
			vcuda_req_free(r);
		}
	}
	kref_put(&vd->ref, vcuda_dev_free);
	kfree(f);
	return 0;
}

static const struct file_operations vcuda_fops = {
	.owner = THIS_MODULE,
	.open = vcuda_open,
	.release = vcuda_release,
	.unlocked_ioctl = vcuda_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* ---- virtio driver ---- */

static int vcuda_probe(struct virtio_device *vdev)
{
	struct vcuda_dev *vd;
	u32 version;
	int err;

	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1))
		return -ENODEV;
	version = virtio_cread32(vdev, VCUDA_CFG_VERSION);
	if (version != VCUDA_PROTOCOL_VERSION) {
		dev_err(&vdev->dev, "protocol version %u, driver speaks %u\n", version,
			VCUDA_PROTOCOL_VERSION);
		return -ENODEV;
	}
	vd = kzalloc(sizeof(*vd), GFP_KERNEL);
	if (!vd)
		return -ENOMEM;
	kref_init(&vd->ref);
	vd->index = ida_alloc(&vcuda_ida, GFP_KERNEL);
	if (vd->index < 0) {
		err = vd->index;
		kfree(vd);
		return err;
	}
	vd->vdev = vdev;
	spin_lock_init(&vd->lock);
	init_waitqueue_head(&vd->space);
	vd->max_window = virtio_cread64(vdev, VCUDA_CFG_MAX_WINDOW);
	/* Session ids are random per probe, so a reloaded driver never reuses a stale one. */
	atomic64_set(&vd->next_session, get_random_u64() >> 2);
	vdev->priv = vd;

	vd->vq = virtio_find_single_vq(vdev, vcuda_vq_done, "requests");
	if (IS_ERR(vd->vq)) {
		err = PTR_ERR(vd->vq);
		goto put;
	}
	virtio_device_ready(vdev);

	snprintf(vd->name, sizeof(vd->name), "vcuda%d", vd->index);
	vd->misc.minor = MISC_DYNAMIC_MINOR;
	vd->misc.name = vd->name;
	vd->misc.fops = &vcuda_fops;
	vd->misc.mode = 0666;
	err = misc_register(&vd->misc);
	if (err)
		goto del_vqs;
	dev_info(&vdev->dev, "/dev/%s: %u-entry queue, %llu-byte data windows, %u sessions\n",
		 vd->name, virtqueue_get_vring_size(vd->vq), vd->max_window,
		 virtio_cread32(vdev, VCUDA_CFG_MAX_SESSIONS));
	return 0;

del_vqs:
	virtio_reset_device(vdev);
	vdev->config->del_vqs(vdev);
put:
	kref_put(&vd->ref, vcuda_dev_free);
	return err;
}

static void vcuda_remove(struct virtio_device *vdev)
{
	struct vcuda_dev *vd = vdev->priv;
	struct vcuda_req *r;
	unsigned long flags;

	misc_deregister(&vd->misc);
	spin_lock_irqsave(&vd->lock, flags);
	vd->removed = true;
	spin_unlock_irqrestore(&vd->lock, flags);
	virtio_reset_device(vdev);

	/* Fail what the device will never complete. */
	spin_lock_irqsave(&vd->lock, flags);
	while ((r = virtqueue_detach_unused_buf(vd->vq))) {
		r->used_len = 0;
		r->completed = true;
		if (r->async || r->orphan)
			schedule_work(&r->free_work);
		else
			complete(&r->done);
	}
	spin_unlock_irqrestore(&vd->lock, flags);
	wake_up_all(&vd->space);
	vdev->config->del_vqs(vdev);
	kref_put(&vd->ref, vcuda_dev_free);
}

static const struct virtio_device_id vcuda_id_table[] = {
	{ VIRTIO_ID_VCUDA, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

static struct virtio_driver vcuda_driver = {
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = vcuda_id_table,
	.probe = vcuda_probe,
	.remove = vcuda_remove,
};

module_virtio_driver(vcuda_driver);
MODULE_DEVICE_TABLE(virtio, vcuda_id_table);
MODULE_DESCRIPTION("virtio-cuda: CUDA driver-API forwarding to the host");
MODULE_LICENSE("GPL");
