/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* blockjobd's image layer: disk images as the jobs see them. An Image is one layer (a raw file or
 * block device, or a qcow2 file) plus, for qcow2, the chain of backing images below it, opened
 * with it. Reads see through the chain; block status says, range by range, what reads as data,
 * as zeroes, or is not allocated at all, and in which layer that was decided.
 *
 * Threads: an Image and its chain may be used by one thread at a time (a job's steps run one at
 * a time), so it takes no locks of its own. Two jobs never share an Image: each opens its own,
 * and QEMU's image locks (lock.h) keep writers apart, in this process and across processes.
 *
 * Descriptors: a layer opened read-only with locks shares one open file description with every
 * other such layer of the same file (same mount) that takes the same locks (shared-fd.h): ten
 * thousand backups of one source hold one descriptor for it, not ten thousand. That description
 * holds the locks for all of them, as long as any of them is open, and loses them with the last
 * close; its state is never changed (it is only read, with pread, and its locks are taken once,
 * before it is shared). A layer opened for writing always has a description of its own, so that
 * its locks still conflict with those of the readers, in this process too.
 *
 * Errors: functions return a negative errno. Opening and creating also give a message naming
 * the file and the reason; for I/O, image_error() holds the last message (a corrupt image says
 * what is wrong and where). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/stat.h>

typedef struct Image Image;

typedef enum ImageFormat {
        IMAGE_FORMAT_PROBE,             /* opening: decide from the content */
        IMAGE_FORMAT_RAW,
        IMAGE_FORMAT_QCOW2,
        _IMAGE_FORMAT_MAX,
} ImageFormat;

typedef enum ImageOpenFlags {
        IMAGE_OPEN_WRITE        = 1 << 0,   /* for writing (takes QEMU's write permission) */
        IMAGE_OPEN_SHARE_WRITE  = 1 << 1,   /* read-only, and let others write meanwhile (a mirror's source) */
        IMAGE_OPEN_NO_BACKING   = 1 << 2,   /* this layer alone: reads of unallocated ranges give zeroes */
        IMAGE_OPEN_NO_LOCK      = 1 << 3,   /* no QEMU locks (tests, fuzzing) */
        IMAGE_OPEN_HEADERS_ONLY = 1 << 4,   /* headers and the chain only, no tables: nothing can be
                                             * read, only the files found (blockjobd-opener) */
        IMAGE_OPEN_BORROW_FD    = 1 << 5,   /* the top layer uses the caller's descriptor itself:
                                             * not duplicated, not reopened, not closed; its locks
                                             * are taken on the caller's open file description,
                                             * which the caller keeps open as long as the image
                                             * (a target: the TargetFile's one descriptor) */
        IMAGE_OPEN_BITMAPS_ONLY = 1 << 6,   /* with IMAGE_OPEN_WRITE: to change the layer's
                                             * persistent bitmaps, never its data. Its enabled
                                             * bitmaps are not loaded to record writes, nor
                                             * counted (image_bitmap_change_memory() counts what
                                             * a change reads); a qcow2 layer refuses a write
                                             * of data (-EBADF) */
} ImageOpenFlags;

#define IMAGE_CHAIN_DEPTH_MAX 64

const char *image_format_to_string(ImageFormat f);
ImageFormat image_format_from_string(const char *s);

/* Opens 'path' (its chain too, unless IMAGE_OPEN_NO_BACKING).
 *
 * Formats: probing never makes the image layer read a file that nobody named. Only the top image
 * is ever probed (IMAGE_FORMAT_PROBE), and only a regular file, raw or qcow2 by its magic: a block
 * device is raw unless told otherwise, since its content may come from a guest. A probed image
 * that turns out to be qcow2 and names a backing file is refused (-EINVAL) unless its chain is
 * not to be opened (IMAGE_OPEN_NO_BACKING): a raw disk whose guest wrote a qcow2 header into it
 * would otherwise make us read any file of the host (QEMU's CVE-2008-2004). A backing file is
 * opened with the format its parent records (in a header extension, version 2 images too), never
 * probed; one whose parent records none is refused (-EINVAL), unless the caller names its format
 * (ImageOpenOptions.base_format). */
int image_open(const char *path, ImageFormat format, unsigned flags, Image **ret, char **ret_error);
/* Control over the chain as it is opened (for commit): a file where the chain stops (that layer
 * and those below are not opened; the one above it reads unallocated ranges as zeroes), and a
 * backing layer to open for writing. Files are named by device and inode. */
typedef struct ImageOpenOptions {
        const struct stat *stop_before;
        const struct stat *writable;
        const struct ImageChainFds *fds;
        /* The format of one backing file, as the caller knows it (commit's and stream's base):
         * the layer that is file 'base' is opened as 'base_format' if its parent records no
         * format, and refused (-EINVAL) if its parent records a different one. PROBE: not given. */
        const struct stat *base;
        ImageFormat base_format;
        /* A chain opened by name: called with each layer, open, before a name it records is
         * looked up; it may change who looks it up (blockjobd-opener drops its rights to the
         * layer's owner), or refuse with a negative errno and a message. */
        int (*before_following)(const Image *layer, void *userdata, char **ret_error);
        void *userdata;
        /* The most memory the chain may take (image_memory_estimate()), checked as each layer is
         * opened, so that a chain of huge tables stops at the first one too many, and before a
         * layer to be written loads its enabled bitmaps: -E2BIG and a message. 0: no bound. */
        uint64_t memory_max;
} ImageOpenOptions;

/* A chain's files as descriptors, top first, opened by someone else: a caller that passed them,
 * or the helper that opened them with a caller's rights. With these, nothing is opened by name:
 * layer N of the chain is fds[N] (its name, for messages and for resolving the names below it, is
 * the one its parent records), a chain that names more backing files than there are descriptors
 * is refused (-EPERM), and a layer to be written must have been opened for writing (-EACCES).
 * Only the descriptors a chain needs are used; each is reopened (through /proc/self/fd) into an
 * open file description of the image layer's own, which holds its locks (a read-only one may be
 * shared with other images, see above; the top layer's is the caller's with
 * IMAGE_OPEN_BORROW_FD). */
typedef struct ImageChainFds {
        const int *fds;
        size_t n;
} ImageChainFds;

int image_open_full(const char *path, ImageFormat format, unsigned flags, const ImageOpenOptions *options, Image **ret,
                    char **ret_error);

/* The same on an open file; 'name' is what messages call it and what relative backing names are
 * resolved against. The fd is duplicated (or borrowed: IMAGE_OPEN_BORROW_FD); it is never
 * shared with other images, since the caller's own copy would keep its locks. */
int image_open_fd(int fd, const char *name, ImageFormat format, unsigned flags, Image **ret, char **ret_error);
/* Closes the image and its chain. */
Image *image_close(Image *img);

const char *image_path(const Image *img);
/* The format this layer was opened as, and whether that was decided by probing its content. */
ImageFormat image_format(const Image *img);
bool image_format_probed(const Image *img);
/* The virtual size. qcow2: in whole sectors of 512 bytes, as QEMU reads it (a header that says
 * otherwise is rounded down). */
uint64_t image_size(const Image *img);
/* The image below, or NULL. */
Image *image_backing(const Image *img);
/* As recorded in the header: the backing file name (NULL when none), and its format (PROBE when
 * none is recorded). */
const char *image_backing_name(const Image *img);
ImageFormat image_backing_format(const Image *img);
int image_chain_depth(const Image *img);          /* 1 for an image without backing file */
/* Smallest unit the layer allocates in (cluster size; 512 for raw). */
uint32_t image_cluster_size(const Image *img);
/* The most memory, in bytes, that the chain's metadata can take while it is open, whatever is
 * done with it: for each layer its L1 table (qcow2 allows up to 32 MiB; twice for a layer open
 * with IMAGE_OPEN_SHARE_WRITE, which image_refresh() reads anew), its L2 table cache at its bound
 * (at most 16 tables and 4 MiB, two tables at least), the buffers for compressed clusters, and if
 * it is open for writing, its refcount table as large as the file can make it grow (up to QEMU's
 * 8 MiB), the refcount block cache, freed clusters not yet applied, the buffers of one
 * request, and the maps of its enabled bitmaps, which it loads to record its writes (not with
 * IMAGE_OPEN_BITMAPS_ONLY). The caller's own buffers are not counted. Headers decide most of it: a factory can
 * refuse a job whose chain would take too much (the figure is known once the chain is open, and
 * only grows to it as the job runs). */
uint64_t image_memory_estimate(const Image *img);
const char *image_error(const Image *img);
/* The file of this layer, and its descriptor (to hand it over; it stays the image's). */
const struct stat *image_stat(const Image *img);
int image_fd(const Image *img);
/* Is this file (device and inode) one of the chain's layers? */
bool image_chain_contains(const Image *img, const struct stat *st);
/* The layer of the chain that is this file, and its depth (0: img itself); NULL if none. */
Image *image_chain_find(Image *img, const struct stat *st, int *ret_depth);
/* The layer that 'name' names, as the chain names its layers (the image as it was given, each
 * backing file as its parent records it, relative to the parent); spellings of the same path
 * ("//", "/./", "..") match, nothing is looked up. Returns 1 and the layer, or 0 if none is. */
int image_chain_lookup(Image *img, const char *name, Image **ret, int *ret_depth);

/* Reads what the guest would see, through the chain; past the end of a backing image, zeroes. */
int image_read(Image *img, void *buf, uint64_t offset, size_t length);

/* Block status, through the chain, as `qemu-img map` reports it. */
typedef struct ImageExtent {
        uint64_t length;
        int depth;              /* the layer that decided: 0 = this image; if nothing is
                                 * allocated anywhere, the bottom layer */
        bool present;           /* allocated in some layer */
        bool zero;              /* reads as zeroes */
        bool data;              /* reads data from a layer */
} ImageExtent;

/* The extent starting at 'offset', at most 'length' bytes long (and at least one byte). */
int image_block_status(Image *img, uint64_t offset, uint64_t length, ImageExtent *ret);

/* What this layer alone holds (for commit, stream and sync=top). */
typedef enum LayerKind {
        LAYER_UNALLOCATED,      /* nothing here: reads fall through to the backing image */
        LAYER_ZERO,             /* allocated as zeroes */
        LAYER_DATA,             /* allocated with data */
} LayerKind;

int image_layer_status(Image *img, uint64_t offset, uint64_t length, LayerKind *ret_kind, uint64_t *ret_length);

/* For a source that others write meanwhile (a mirror's, open with IMAGE_OPEN_SHARE_WRITE):
 * forgets what was cached of this layer's metadata and reads it again, so that what follows sees
 * the writes made so far. The virtual size may have changed; a changed backing file name is an
 * error (-ESTALE). Layers below are taken as they are: nobody writes a backing file. On failure
 * the image stays as it was. */
int image_refresh(Image *img);

/* Writing: the image must be open with IMAGE_OPEN_WRITE. Data goes into this layer only. */
int image_write(Image *img, const void *buf, uint64_t offset, size_t length);
/* Makes the range read as zeroes, writing no data where the format allows (qcow2 v3: zero
 * clusters; raw files: holes). */
int image_write_zeroes(Image *img, uint64_t offset, uint64_t length);
/* Drops whole clusters, which become unallocated and read through to the backing image again
 * (raw: holes, zeroes). Partial clusters at either end are left as they are. */
int image_discard(Image *img, uint64_t offset, uint64_t length);
/* Makes everything written so far durable and the image consistent on disk. */
int image_flush(Image *img);
/* A qcow2 image whose writer was killed (kill -9, a crash) may have leaked clusters: counted, used
 * by nothing (the write order allows that, never worse: see qcow2-write.c), which qemu-img check
 * reports (exit 3) and which nothing would ever reclaim. This counts them free again, as
 * `qemu-img check -r leaks` does: every cluster the image's metadata uses (header, L1, L2 and
 * refcount tables, data clusters) is marked, in windows of the file of bounded memory, and each
 * counted cluster that none uses gets the count 0 (1 if used); durable when it returns. Only
 * lowering the count of a cluster nothing points to, it is safe at any crash point. For a layer
 * open for writing, before the job that writes it goes on; an image with snapshots, bitmaps or
 * compressed clusters (which blockjobd never writes) is refused (-EOPNOTSUPP), and one whose
 * metadata use a cluster twice, outside the file, or without counting it is corrupt (-EUCLEAN).
 * Raw images have nothing to repair. Returns 0 and the clusters repaired. */
int image_repair_leaks(Image *img, uint64_t *ret_leaked);
/* Rewrites the backing file name (as recorded: relative to the image) and format in the
 * header, NULL for none, in place and durably. The chain that is open does not change. A name
 * goes with its format, raw or qcow2 (-EINVAL without one): what we write, we record, so that
 * nobody has to guess it. If the header has no room for the name (its first cluster is full),
 * -ENOSPC, and nothing is written. */
int image_set_backing(Image *img, const char *name, ImageFormat format);

/* ---- the kernel's help, for raw files --------------------------------------------------------
 *
 * For copy-io.h: the data path between two raw images on regular files. Each is an optimisation
 * only, and says so by how it fails: a refusal costs nothing and the caller copies by reading
 * and writing instead. */

/* Is this layer a raw image on a regular file (what the calls below work on)? */
bool image_is_raw_file(const Image *img);

typedef enum ImageCopyMode {
        IMAGE_COPY_CLONE,               /* FICLONERANGE: share the extents (XFS reflink, btrfs) */
        IMAGE_COPY_RANGE,               /* copy_file_range(): the kernel copies */
} ImageCopyMode;

/* Copies [offset, offset + length) of 'src' to the same range of 'dst' (open for writing) in the
 * kernel. Both must be raw files (-EOPNOTSUPP otherwise); a clone must be aligned to the file
 * system's block size. Returns the bytes copied (> 0; fewer than asked at the end of the file),
 * or a negative errno: with *ret_failed set, a fault the test hooks injected into that image (a
 * read of 'src' or a write of 'dst'), with its message in image_error(), exactly as image_read()
 * or image_write() of the range would fail; with *ret_failed NULL, the kernel's refusal or
 * failure, recorded nowhere: the caller falls back to reading and writing, which fails again
 * with the right image and message if the error was real. */
int image_copy_range(Image *src, Image *dst, uint64_t offset, uint64_t length, ImageCopyMode mode,
                     Image **ret_failed);
/* The block size that clones must be aligned to (of the file system holding the file), or 0 if
 * unknown. */
uint32_t image_file_block_size(const Image *img);
/* Starts reading [offset, offset + length) into the page cache, without waiting (readahead(2)),
 * so that the read that follows finds it there while we did something else. Raw files only; a
 * hint, never an error. */
void image_readahead(Image *img, uint64_t offset, uint64_t length);
/* Starts writing back what was written to [offset, offset + length), without waiting for it
 * (sync_file_range(SYNC_FILE_RANGE_WRITE)): the device writes while we read the next chunk,
 * and the flush at the end finds little left to do. Raw files only; not a flush, and no error:
 * image_flush() is what makes data durable and reports write-back failures. */
void image_write_behind(Image *img, uint64_t offset, uint64_t length);

/* ---- persistent dirty bitmaps (qcow2) ---------------------------------------------------------
 *
 * QEMU's persistent dirty bitmaps, as a qcow2 image stores them (docs/interop/qcow2.txt). Each
 * bit stands for 'granularity' bytes of the virtual disk; a set bit: that range was written
 * while the bitmap was enabled ("auto"). Raw images have none. The bitmap directory is read and
 * checked when a layer is opened for writing (a directory that cannot be kept consistent refuses
 * the open), else at the first call below; a directory QEMU would refuse is refused the same
 * way (-EUCLEAN and a message naming the image), never trusted. */

typedef enum ImageBitmapFlags {
        IMAGE_BITMAP_IN_USE       = 1 << 0,   /* the in_use flag, as on disk now */
        IMAGE_BITMAP_AUTO         = 1 << 1,   /* enabled: records every write */
        IMAGE_BITMAP_INCONSISTENT = 1 << 2,   /* in_use when we opened it: whoever had it did not
                                               * save it, and its content cannot be used */
} ImageBitmapFlags;

typedef struct ImageBitmapInfo {
        char *name;
        uint32_t granularity;           /* bytes per bit */
        unsigned flags;                 /* ImageBitmapFlags */
} ImageBitmapInfo;

/* The layer's bitmaps, in directory order (as `qemu-img info` lists them). A bitmaps extension
 * that a program lacking bitmap support invalidated (autoclear bit 0 clear) holds none, as for
 * QEMU; image_bitmaps_lost() says so. */
int image_bitmap_list(Image *img, ImageBitmapInfo **ret, size_t *ret_n);
void image_bitmap_list_free(ImageBitmapInfo *list, size_t n);
bool image_bitmaps_lost(Image *img);

/* A dirty bitmap in memory. Bit i (bit i % 64 of words[i / 64]) covers the bytes
 * [i * granularity, (i + 1) * granularity) of the virtual disk; bits past nbits are zero. */
typedef struct ImageDirtyMap {
        uint64_t size;                  /* virtual size covered */
        uint32_t granularity;           /* a power of 2, 512 B to 2 GiB */
        uint64_t nbits;                 /* size / granularity, rounded up */
        uint64_t *words;
} ImageDirtyMap;

/* An empty map; at most QEMU's 512 MiB of bits (-E2BIG beyond). */
int image_dirty_map_new(uint64_t size, uint32_t granularity, ImageDirtyMap **ret);
ImageDirtyMap *image_dirty_map_free(ImageDirtyMap *m);
/* Marks every granule that [offset, offset + length) touches. */
void image_dirty_map_set(ImageDirtyMap *m, uint64_t offset, uint64_t length);
/* Clears every granule that [offset, offset + length) covers whole (the end of the disk counts
 * as covering a partial last granule): what a backup copied, say. */
void image_dirty_map_reset(ImageDirtyMap *m, uint64_t offset, uint64_t length);
/* Dirty bytes (the last granule counts only up to the end of the disk). */
uint64_t image_dirty_map_count(const ImageDirtyMap *m);
/* The first dirty range at or after 'offset' (whole granules, clipped to the size); false if
 * there is none. */
bool image_dirty_map_next(const ImageDirtyMap *m, uint64_t offset, uint64_t *ret_start, uint64_t *ret_length);

/* Reads bitmap 'name' of this layer: -ENOENT ("Dirty bitmap 'NAME' not found"), -EBUSY for an
 * inconsistent one (QEMU's "Bitmap 'NAME' is inconsistent and cannot be used"). */
int image_bitmap_load(Image *img, const char *name, ImageDirtyMap **ret);
/* The dirty bytes (as image_dirty_map_count()) of bitmap i of image_bitmap_list(), read without
 * loading its map: a cluster of its table and a cluster of its data at a time, so at most two
 * clusters of memory (image_cluster_size()) besides the directory. -EBUSY for an inconsistent
 * bitmap, -EUCLEAN for a table QEMU would refuse. */
int image_bitmap_dirty_bytes(Image *img, size_t i, uint64_t *ret);

/* Changing bitmaps, as QEMU's block-dirty-bitmap-* commands do on a persistent bitmap, on a
 * qcow2 v3 layer open for writing. Each change is durable when it returns, and crash safe: the
 * image has the bitmaps of before or of after, never a mix (at worst leaked clusters). Errors
 * carry QEMU's texts: -ENOENT "Dirty bitmap 'NAME' not found", -EEXIST "Bitmap already exists:
 * NAME", -EBUSY "Bitmap 'NAME' is inconsistent and cannot be used" (only removing such a bitmap
 * works), -EINVAL for a name or granularity QEMU would refuse, -EOPNOTSUPP on raw or qcow2 v2. */
/* QEMU's default granularity for this layer: its cluster size, within 4 KiB to 64 KiB. */
uint32_t image_bitmap_default_granularity(const Image *img);
/* A new empty bitmap; granularity 0: the default; disabled: it records nothing until enabled. */
int image_bitmap_add(Image *img, const char *name, uint32_t granularity, bool disabled);
int image_bitmap_remove(Image *img, const char *name);
int image_bitmap_clear(Image *img, const char *name);
int image_bitmap_enable(Image *img, const char *name, bool enable);
/* Every bit set in any of the sources set in 'target' too (granularities may differ). */
int image_bitmap_merge(Image *img, const char *target, const char *const *sources, size_t n);
/* The bitmap's content becomes 'm' (of its granularity and the layer's size, else -EINVAL): a
 * backup with bitmap-mode=always stores what is left to copy. */
int image_bitmap_replace(Image *img, const char *name, const ImageDirtyMap *m);
/* What a change of these bitmaps (a target and sources; names the layer lacks count nothing)
 * reads and writes beyond image_memory_estimate() of a layer open with IMAGE_OPEN_BITMAPS_ONLY:
 * two maps as large as the largest of theirs (a merge's target and one source at a time, or a
 * cleared bitmap's empty map and nothing else). */
uint64_t image_bitmap_change_memory(const Image *img, const char *const *names, size_t n);

typedef struct ImageCreateParams {
        ImageFormat format;             /* IMAGE_FORMAT_RAW or IMAGE_FORMAT_QCOW2 */
        uint64_t size;                  /* qcow2: rounded up to a multiple of 512, as qemu-img does */
        uint32_t cluster_size;          /* qcow2: a power of 2, 512 B to 2 MiB; 0 = 64 KiB */
        unsigned refcount_bits;         /* qcow2: 1, 2, 4, ... 64; 0 = 16 */
        const char *backing_name;       /* qcow2: recorded as given */
        ImageFormat backing_format;     /* qcow2: raw or qcow2, required with a backing name */
} ImageCreateParams;

/* Formats an empty file open for writing (a target built unseen, see tmpfile.h); 'name' is for
 * messages. qcow2 images are version 3 (compat 1.1), like qemu-img makes them. */
int image_create_fd(int fd, const char *name, const ImageCreateParams *p, char **ret_error);
/* Creates 'path', which must not exist. */
int image_create(const char *path, const ImageCreateParams *p, char **ret_error);
