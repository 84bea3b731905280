/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "agent.h"
#include "error.h"
#include "fileio.h"
#include "lease.h"
#include "qemuimg.h"
#include "sdmeta.h"
#include "ckpt.h"
#include "storage.h"
#include "uuid.h"


void agent_volref_init(struct agent_volref *ref, const char *sd, const char *img, const char *vol)
{
        g_assert(fy_uuid_is_valid(sd) && fy_uuid_is_valid(img) && fy_uuid_is_valid(vol));
        for (size_t i = 0; i <= FY_UUID_STR_LEN; i++) {
                ref->sd[i] = g_ascii_tolower(sd[i]);
                ref->img[i] = g_ascii_tolower(img[i]);
                ref->vol[i] = g_ascii_tolower(vol[i]);
        }
}

char *agent_sd_path(struct agent *a, const char *sd)
{
        g_assert(fy_uuid_is_valid(sd));
        return g_build_filename(a->config.storage_root, sd, NULL);
}

char *agent_image_path(struct agent *a, const char *sd, const char *img)
{
        g_assert(fy_uuid_is_valid(sd) && fy_uuid_is_valid(img));
        return g_build_filename(a->config.storage_root, sd, "images", img, NULL);
}

#define SWEEP_IMAGES_MAX 100000         /* image directories of one domain looked at for stale temp files */

/* Whether the file was last changed before `before` (microseconds since the epoch). */
static bool changed_before(const struct stat *st, gint64 before)
{
        return (gint64) st->st_mtim.tv_sec * G_USEC_PER_SEC + st->st_mtim.tv_nsec / 1000 < before;
}

unsigned agent_sd_remove_stale_temps(struct agent *a, const char *sd, gint64 before)
{
        g_autofree char *root = agent_sd_path(a, sd);
        g_autofree char *images = g_build_filename(root, "images", NULL);
        g_autoptr(GDir) dir = g_dir_open(images, 0, NULL);
        unsigned removed = 0, seen = 0;
        const char *img;

        while (dir && (img = g_dir_read_name(dir)) && seen++ < SWEEP_IMAGES_MAX) {
                g_autofree char *path = g_build_filename(images, img, NULL);
                g_autoptr(GDir) idir = fy_uuid_is_valid(img) ? g_dir_open(path, 0, NULL) : NULL;
                const char *name;

                while (idir && (name = g_dir_read_name(idir))) {
                        g_autofree char *file = NULL;
                        struct stat st;

                        if (!fy_atomic_temp_name(name, ".meta"))
                                continue;
                        file = g_build_filename(path, name, NULL);
                        if (lstat(file, &st) < 0 || !S_ISREG(st.st_mode) || !changed_before(&st, before))
                                continue;
                        if (unlink(file) < 0) {
                                g_warning("storage domain %s: cannot remove stale metadata temp file %s: %s", sd, file,
                                          g_strerror(errno));
                                continue;
                        }
                        g_message("storage domain %s: removed stale metadata temp file %s (a metadata write cut short "
                                  "before this agent started)", sd, file);
                        removed++;
                }
        }
        return removed;
}

char *agent_volume_path(struct agent *a, const struct agent_volref *ref)
{
        g_autofree char *dir = agent_image_path(a, ref->sd, ref->img);
        g_assert(fy_uuid_is_valid(ref->vol));
        return g_build_filename(dir, ref->vol, NULL);
}

char *agent_volume_lease_path(struct agent *a, const struct agent_volref *ref)
{
        g_autofree char *path = agent_volume_path(a, ref);
        return g_strconcat(path, ".lease", NULL);
}

char *agent_sd_ids_path(struct agent *a, const char *sd)
{
        g_assert(fy_uuid_is_valid(sd));
        return g_build_filename(a->config.storage_root, sd, "dom_md", "ids", NULL);
}

char *agent_sd_leases_path(struct agent *a, const char *sd)
{
        g_assert(fy_uuid_is_valid(sd));
        return g_build_filename(a->config.storage_root, sd, "dom_md", "leases", NULL);
}

static int fail_errno(GError **error, int code, int err, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static int fail_errno(GError **error, int code, int err, const char *fmt, ...)
{
        g_autofree char *what = NULL;
        va_list ap;

        va_start(ap, fmt);
        what = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (err == ENOSPC || err == EDQUOT)
                code = FY_ERR_NO_SPACE;
        g_set_error(error, FY_ERROR, code, "%s: %s", what, g_strerror(err));
        return -err;
}

static int create_sized_file(const char *path, uint64_t size, bool allocate, GError **error)
{
        int fd, r;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
        if (fd < 0)
                return fail_errno(error, FY_ERR_GENERAL, errno, "cannot create %s", path);
        if (ftruncate(fd, (off_t) size) < 0) {
                r = errno;
                close(fd);
                return fail_errno(error, FY_ERR_GENERAL, r, "cannot size %s", path);
        }
        if (allocate && size > 0) {
                r = posix_fallocate(fd, 0, (off_t) size);
                if (r != 0) {
                        close(fd);
                        return fail_errno(error, FY_ERR_GENERAL, r, "cannot preallocate %" G_GUINT64_FORMAT " bytes for %s",
                                          size, path);
                }
        }
        if (fsync(fd) < 0) {
                r = errno;
                close(fd);
                return fail_errno(error, FY_ERR_GENERAL, r, "cannot sync %s", path);
        }
        close(fd);
        return 0;
}

/* ---- storage domains ---- */

static bool sd_name_valid(const char *name)
{
        size_t len = strlen(name);

        if (len == 0 || len > AGENT_SD_NAME_MAX)
                return false;
        for (const char *p = name; *p; p++)
                if (!g_ascii_isalnum(*p) && !strchr(" _-.", *p))
                        return false;
        return true;
}

int agent_sd_create(struct agent *a, const char *sd, const char *name, GError **error)
{
        g_autofree char *path = agent_sd_path(a, sd);
        g_autofree char *dom_md = g_build_filename(path, "dom_md", NULL);
        g_autofree char *images = g_build_filename(path, "images", NULL);
        g_autofree char *ids = agent_sd_ids_path(a, sd);
        g_autofree char *leases = agent_sd_leases_path(a, sd);
        g_autofree char *meta = NULL;
        struct agent_lease spm = { sd, AGENT_SPM_LEASE_NAME, leases, AGENT_SPM_LEASE_OFFSET };
        int dirfd, r;

        if (!sd_name_valid(name)) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "storage domain name must be 1-%d letters, digits, spaces or _-. characters",
                            AGENT_SD_NAME_MAX);
                return -EINVAL;
        }
        if (g_mkdir_with_parents(a->config.storage_root, 0755) < 0)
                return fail_errno(error, FY_ERR_GENERAL, errno, "cannot create storage root %s", a->config.storage_root);
        if (mkdir(path, 0755) < 0) {
                if (errno == EEXIST) {
                        g_set_error(error, FY_ERROR, FY_ERR_STORAGE_DOMAIN_ALREADY_EXISTS,
                                    "storage domain %s already exists at %s", sd, path);
                        return -EEXIST;
                }
                return fail_errno(error, FY_ERR_GENERAL, errno, "cannot create %s", path);
        }
        if (mkdir(dom_md, 0755) < 0 || mkdir(images, 0755) < 0) {
                r = fail_errno(error, FY_ERR_GENERAL, errno, "cannot create the layout of %s", path);
                goto undo;
        }
        if ((r = create_sized_file(ids, AGENT_IDS_FILE_SIZE, false, error)) < 0 ||
            (r = create_sized_file(leases, AGENT_LEASES_FILE_SIZE, false, error)) < 0)
                goto undo;
        if ((r = agent_lockspace_write(sd, ids, a->config.io_timeout, error)) < 0 ||
            (r = agent_lease_format(&spm, error)) < 0)
                goto undo;

        /* Written last: a domain without metadata is not a domain. */
        meta = g_strdup_printf("ALIGNMENT=1048576\n"
                               "BLOCK_SIZE=512\n"
                               "CLASS=Data\n"
                               "DESCRIPTION=%s\n"
                               "IOOPTIMEOUTSEC=%u\n"
                               "LEASERETRIES=3\n"
                               "LEASETIMESEC=60\n"
                               "LOCKPOLICY=\n"
                               "LOCKRENEWALINTERVALSEC=5\n"
                               "POOL_UUID=\n"
                               "REMOTE_PATH=%s\n"
                               "ROLE=Regular\n"
                               "SDUUID=%s\n"
                               "TYPE=LOCALFS\n"
                               "VERSION=" FY_SD_VERSION "\n"
                               "EOF\n",
                               name, a->config.io_timeout, path, sd);
        dirfd = open(dom_md, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (dirfd < 0) {
                r = fail_errno(error, FY_ERR_GENERAL, errno, "cannot open %s", dom_md);
                goto undo;
        }
        r = fy_write_file_atomic_at(dirfd, "metadata", meta, strlen(meta));
        close(dirfd);
        if (r < 0) {
                fail_errno(error, FY_ERR_GENERAL, -r, "cannot write %s/metadata", dom_md);
                goto undo;
        }
        return 0;
undo:
        unlink(ids);
        unlink(leases);
        rmdir(dom_md);
        rmdir(images);
        rmdir(path);
        return r;
}

/* Reads and parses dom_md/metadata, validating it belongs to sd. */
static GHashTable *sd_meta_read(struct agent *a, const char *sd, GError **error)
{
        g_autofree char *dom_md = g_build_filename(a->config.storage_root, sd, "dom_md", NULL);
        g_autofree char *text = NULL;
        GHashTable *kv = NULL;
        size_t len;
        int dirfd, r;

        dirfd = open(dom_md, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (dirfd < 0) {
                if (errno == ENOENT) {
                        g_set_error(error, FY_ERROR, FY_ERR_STORAGE_DOMAIN_DOES_NOT_EXIST,
                                    "storage domain %s does not exist under %s", sd, a->config.storage_root);
                        return NULL;
                }
                fail_errno(error, FY_ERR_GENERAL, errno, "cannot open %s", dom_md);
                return NULL;
        }
        r = fy_read_small_file_at(dirfd, "metadata", FY_SD_META_MAX, &text, &len);
        close(dirfd);
        if (r == -ENOENT) {
                g_set_error(error, FY_ERROR, FY_ERR_STORAGE_DOMAIN_DOES_NOT_EXIST,
                            "storage domain %s has no metadata (creation never finished?)", sd);
                return NULL;
        }
        if (r < 0) {
                fail_errno(error, FY_ERR_METADATA, -r, "cannot read metadata of storage domain %s", sd);
                return NULL;
        }
        if (fy_sd_meta_parse(text, len, sd, &kv, error) < 0)
                return NULL;
        return kv;
}

int agent_sd_check(struct agent *a, const char *sd, GError **error)
{
        g_autoptr(GHashTable) kv = sd_meta_read(a, sd, error);
        return kv ? 0 : -ENOENT;
}

json_t *agent_sd_info(struct agent *a, const char *sd, GError **error)
{
        g_autoptr(GHashTable) kv = sd_meta_read(a, sd, error);
        g_autofree char *path = NULL;

        if (!kv)
                return NULL;
        path = agent_sd_path(a, sd);
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
                         "uuid", sd,
                         "name", (char *) g_hash_table_lookup(kv, "DESCRIPTION") ?: "",
                         "version", FY_SD_VERSION,
                         "class", (char *) g_hash_table_lookup(kv, "CLASS") ?: "Data",
                         "type", (char *) g_hash_table_lookup(kv, "TYPE") ?: "LOCALFS",
                         "role", (char *) g_hash_table_lookup(kv, "ROLE") ?: "Regular",
                         "remotePath", path,
                         "block_size", (char *) g_hash_table_lookup(kv, "BLOCK_SIZE") ?: "512");
}

json_t *agent_sd_stats(struct agent *a, const char *sd, GError **error)
{
        g_autofree char *path = NULL;
        struct statvfs st;
        g_autofree char *ids = NULL;
        guint64 max_file = 0;
        json_t *stats;
        int fd;

        if (agent_sd_check(a, sd, error) < 0)
                return NULL;
        path = agent_sd_path(a, sd);
        if (statvfs(path, &st) < 0) {
                fail_errno(error, FY_ERR_GENERAL, errno, "cannot stat %s", path);
                return NULL;
        }
        stats = json_pack("{s:I, s:I, s:I}",
                          "disktotal", (json_int_t) ((guint64) st.f_blocks * st.f_frsize),
                          "diskfree", (json_int_t) ((guint64) st.f_bavail * st.f_frsize),
                          "diskused", (json_int_t) ((guint64) (st.f_blocks - st.f_bfree) * st.f_frsize));
        /* The largest volume file the domain's filesystem holds, so the engine refuses larger disks at the request. */
        ids = agent_sd_ids_path(a, sd);
        fd = open(ids, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && fy_fd_max_file_size(fd, &max_file) == 0)
                json_object_set_new(stats, "max_file_size", json_integer((json_int_t) MIN(max_file, (guint64) INT64_MAX)));
        if (fd >= 0)
                close(fd);
        return stats;
}

static json_t *image_volumes(const char *dir)
{
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        json_t *vols = json_array();
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                size_t len = strlen(name);
                if (len == FY_UUID_STR_LEN + 5 && g_str_has_suffix(name, ".meta")) {
                        g_autofree char *uuid = g_strndup(name, FY_UUID_STR_LEN);
                        if (fy_uuid_is_valid(uuid))
                                json_array_append_new(vols, json_string(uuid));
                }
        }
        return vols;
}

json_t *agent_sd_volumes(struct agent *a, const char *sd, const char *img, GError **error)
{
        g_autofree char *images = NULL;
        g_autoptr(GDir) d = NULL;
        json_t *out;
        const char *name;

        if (agent_sd_check(a, sd, error) < 0)
                return NULL;
        if (img) {
                g_autofree char *dir = agent_image_path(a, sd, img);
                if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
                        g_set_error(error, FY_ERROR, FY_ERR_IMAGE_DOES_NOT_EXIST,
                                    "image %s does not exist in storage domain %s", img, sd);
                        return NULL;
                }
                return image_volumes(dir);
        }
        images = g_build_filename(a->config.storage_root, sd, "images", NULL);
        d = g_dir_open(images, 0, NULL);
        out = json_object();
        while (d && (name = g_dir_read_name(d))) {
                if (fy_uuid_is_valid(name)) {
                        g_autofree char *dir = g_build_filename(images, name, NULL);
                        json_object_set_new(out, name, image_volumes(dir));
                }
        }
        return out;
}

/* ---- volumes ---- */

static int image_dir_open(struct agent *a, const char *sd, const char *img, bool create, GError **error)
{
        g_autofree char *dir = agent_image_path(a, sd, img);
        int fd;

        if (agent_sd_check(a, sd, error) < 0)
                return -ENOENT;
        if (create && mkdir(dir, 0755) < 0 && errno != EEXIST)
                return fail_errno(error, FY_ERR_GENERAL, errno, "cannot create image folder %s", dir);
        fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT) {
                        g_set_error(error, FY_ERROR, FY_ERR_IMAGE_DOES_NOT_EXIST,
                                    "image %s does not exist in storage domain %s", img, sd);
                        return -ENOENT;
                }
                return fail_errno(error, FY_ERR_GENERAL, errno, "cannot open %s", dir);
        }
        return fd;
}

int agent_volume_meta_read(struct agent *a, const struct agent_volref *ref,
                           struct fy_volume_meta **ret, GError **error)
{
        g_autoptr(fy_volume_meta) meta = NULL;
        int dirfd, r;

        dirfd = image_dir_open(a, ref->sd, ref->img, false, error);
        if (dirfd < 0)
                return dirfd;
        r = fy_volume_meta_read_at(dirfd, ref->vol, &meta, error);
        close(dirfd);
        if (r == -ENOENT) {
                g_clear_error(error);
                g_set_error(error, FY_ERROR, FY_ERR_VOLUME_DOES_NOT_EXIST,
                            "volume %s does not exist in image %s of storage domain %s", ref->vol, ref->img, ref->sd);
                return r;
        }
        if (r < 0)
                return r;
        /* A template volume linked into ref's image keeps its own image's metadata (VDSM's shared volumes). */
        if ((g_ascii_strcasecmp(meta->image, ref->img) != 0 && meta->voltype != FY_VOLTYPE_SHARED) ||
            g_ascii_strcasecmp(meta->domain, ref->sd) != 0) {
                g_set_error(error, FY_ERROR, FY_ERR_METADATA,
                            "volume %s: metadata names image %s in domain %s, but it lives in image %s of domain %s",
                            ref->vol, meta->image, meta->domain, ref->img, ref->sd);
                return -EINVAL;
        }
        *ret = g_steal_pointer(&meta);
        return 0;
}

bool agent_volume_is_foreign(const struct agent_volref *ref, const struct fy_volume_meta *meta)
{
        return g_ascii_strcasecmp(meta->image, ref->img) != 0;
}

int agent_volume_meta_write(struct agent *a, const struct agent_volref *ref,
                            const struct fy_volume_meta *meta, GError **error)
{
        int dirfd, r;

        if (agent_volume_is_foreign(ref, meta)) {
                /* The rename would replace the link by a diverging copy: the template's own image owns it. */
                g_set_error(error, FY_ERROR, FY_ERR_METADATA,
                            "volume %s is a template volume of image %s linked into image %s; "
                            "its metadata can only change through image %s", ref->vol, meta->image, ref->img, meta->image);
                return -EPERM;
        }
        dirfd = image_dir_open(a, ref->sd, ref->img, false, error);
        if (dirfd < 0)
                return dirfd;
        r = fy_volume_meta_write_at(dirfd, ref->vol, meta, error);
        close(dirfd);
        return r;
}

static void volume_remove_files(struct agent *a, const struct agent_volref *ref)
{
        g_autofree char *path = agent_volume_path(a, ref);
        g_autofree char *lease = agent_volume_lease_path(a, ref);
        g_autofree char *meta = g_strconcat(path, ".meta", NULL);
        g_autofree char *ckpt = g_strconcat(path, AGENT_CKPT_SUFFIX, NULL);

        unlink(path);
        unlink(ckpt);          /* an unfinished copy's checkpoint (sdm.c) */
        unlink(lease);
        unlink(meta);          /* last: the volume exists while its metadata does */
}


int agent_volume_lease_take(struct agent *a, const struct agent_volref *ref, int busy_code,
                             bool allow_unformatted, struct agent_volume_lease *vl, GError **error)
{
        g_autoptr(GError) e = NULL;
        struct stat st;
        int r;

        g_assert(!vl->held && !vl->path);
        vl->ref = *ref;
        vl->path = agent_volume_lease_path(a, &vl->ref);
        vl->lease = (struct agent_lease) { vl->ref.sd, vl->ref.vol, vl->path, 0 };
        if (allow_unformatted && (stat(vl->path, &st) < 0 ? errno == ENOENT : st.st_size == 0))
                return 0;
        r = agent_lease_acquire(&vl->lease, busy_code, NULL, &e);
        if (r == -ENODATA && allow_unformatted)
                return 0;
        if (r < 0) {
                if (r != -EBUSY)
                        e->code = FY_ERR_LEASE_ACQUIRE;
                g_set_error(error, FY_ERROR, e->code, "volume %s: %s", ref->vol, e->message);
                g_clear_pointer(&vl->path, g_free);     /* nothing held, nothing for the caller to drop */
                return r;
        }
        vl->held = true;
        return 0;
}

void agent_volume_lease_drop(struct agent_volume_lease *vl)
{
        if (vl->held) {
                g_autoptr(GError) e = NULL;
                if (agent_lease_release(&vl->lease, &e) < 0)
                        g_warning("%s", e->message);
        }
        vl->held = false;
        g_clear_pointer(&vl->path, g_free);
}

/*
 * Makes the template volume tref visible in image img of the same domain,
 * as VDSM's file volumes share a template: hard links of its data, lease
 * and metadata, so a qcow2 layer's bare backing name resolves inside img
 * and both images use one sanlock resource. Removing img later unlinks only
 * the links. Links that already exist (a create retried after a crash) are
 * kept when they are the template's files.
 */
static int volume_share(struct agent *a, const struct agent_volref *tref, const char *img, GError **error)
{
        static const char *const suffixes[] = { ".lease", "", ".meta" };  /* metadata last: it makes the volume */
        struct agent_volref lref;

        agent_volref_init(&lref, tref->sd, img, tref->vol);
        for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
                g_autofree char *tpath = agent_volume_path(a, tref);
                g_autofree char *lpath = agent_volume_path(a, &lref);
                g_autofree char *from = g_strconcat(tpath, suffixes[i], NULL);
                g_autofree char *to = g_strconcat(lpath, suffixes[i], NULL);
                struct stat sf, st;

                if (link(from, to) == 0)
                        continue;
                if (errno == EEXIST && stat(from, &sf) == 0 && stat(to, &st) == 0 &&
                    sf.st_dev == st.st_dev && sf.st_ino == st.st_ino)
                        continue;
                return fail_errno(error, FY_ERR_GENERAL, errno, "cannot link template volume %s into image %s (%s)",
                                  tref->vol, img, to);
        }
        return 0;
}

static void volume_unshare_unused(struct agent *a, const struct agent_volref *lref);

int agent_volume_create(struct agent *a, const struct agent_volref *ref,
                        const struct agent_volume_create *spec, GError **error)
{
        g_autoptr(fy_volume_meta) meta = fy_volume_meta_new();
        g_autoptr(fy_volume_meta) parent = NULL;
        g_autofree char *path = NULL;
        g_autofree char *lease_path = NULL;
        g_autofree char *meta_name = NULL;
        struct agent_volref pref, tref;
        struct agent_lease lease;
        struct agent_volume_lease plock = { 0 };
        bool shared = spec->parent && spec->parent_img && g_ascii_strcasecmp(spec->parent_img, ref->img) != 0;
        bool linked = false;
        int dirfd, r;

        if (spec->capacity == 0 || spec->capacity % 512 != 0 || spec->capacity > AGENT_VOLUME_CAPACITY_MAX) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "volume size must be a positive multiple of 512 bytes up to 64 TiB, got %" G_GUINT64_FORMAT,
                            spec->capacity);
                return -EINVAL;
        }
        if (spec->parent && spec->format != FY_FORMAT_COW) {
                g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                            "a volume with a parent must be COW (qcow2); RAW volumes cannot have a backing chain");
                return -EINVAL;
        }
        if (shared) {
                /*
                 * A thin layer on a template (VDSM's srcImgUUID != imgUUID). A
                 * template volume never changes (copy_data and update_volume
                 * refuse SHARED volumes), so no lease on it is needed.
                 */
                agent_volref_init(&tref, ref->sd, spec->parent_img, spec->parent);
                r = agent_volume_meta_read(a, &tref, &parent, error);
                if (r < 0) {
                        g_prefix_error(error, "template volume: ");
                        return r;
                }
                if (parent->voltype != FY_VOLTYPE_SHARED || agent_volume_is_foreign(&tref, parent)) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "volume %s of image %s is not a template volume (VOLTYPE %s, not SHARED); "
                                    "only a template's volume can be the parent of a volume in another image",
                                    spec->parent, spec->parent_img, fy_vol_voltype_to_string(parent->voltype));
                        return -EINVAL;
                }
                if (parent->legality != FY_LEGALITY_LEGAL || spec->capacity < parent->capacity) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "template volume %s is %s with size %" G_GUINT64_FORMAT "; the new volume needs a "
                                    "LEGAL parent no larger than its own size %" G_GUINT64_FORMAT,
                                    spec->parent, fy_vol_legality_to_string(parent->legality), parent->capacity,
                                    spec->capacity);
                        return -EINVAL;
                }
        } else if (spec->parent) {
                agent_volref_init(&pref, ref->sd, ref->img, spec->parent);
                /* A missing parent is a clearer error than sanlock failing on its lease file. */
                r = agent_volume_meta_read(a, &pref, &parent, error);
                if (r < 0)
                        return r;
                g_clear_pointer(&parent, fy_volume_meta_free);
                /*
                 * The parent's metadata is rewritten at the end (VOLTYPE):
                 * hold its lease throughout so a copy into it on another
                 * host can neither start meanwhile nor have its ILLEGAL
                 * mark overwritten. Read it again under the lease.
                 */
                r = agent_volume_lease_take(a, &pref, FY_ERR_LEASE_ACQUIRE, false, &plock, error);
                if (r < 0) {
                        g_prefix_error(error, "parent: ");
                        return r;
                }
                r = agent_volume_meta_read(a, &pref, &parent, error);
                if (r < 0)
                        goto out;
                if (parent->legality != FY_LEGALITY_LEGAL) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "parent volume %s is ILLEGAL; finish or redo its copy first", spec->parent);
                        r = -EINVAL;
                        goto out;
                }
                if (spec->capacity < parent->capacity) {
                        g_set_error(error, FY_ERROR, FY_ERR_INVALID_PARAMS,
                                    "volume size %" G_GUINT64_FORMAT " is smaller than its parent's %" G_GUINT64_FORMAT,
                                    spec->capacity, parent->capacity);
                        r = -EINVAL;
                        goto out;
                }
        }

        dirfd = image_dir_open(a, ref->sd, ref->img, true, error);
        if (dirfd < 0) {
                r = dirfd;
                goto out;
        }
        meta_name = g_strconcat(ref->vol, ".meta", NULL);
        if (faccessat(dirfd, meta_name, F_OK, 0) == 0 || faccessat(dirfd, ref->vol, F_OK, 0) == 0) {
                close(dirfd);
                g_set_error(error, FY_ERROR, FY_ERR_VOLUME_ALREADY_EXISTS,
                            "volume %s already exists in image %s of storage domain %s", ref->vol, ref->img, ref->sd);
                r = -EEXIST;
                goto out;
        }
        close(dirfd);
        if (shared) {
                /* Before the layer: qemu-img create resolves the bare backing name in this folder. */
                r = volume_share(a, &tref, ref->img, error);
                linked = true;  /* even half-done: the failure path removes what was linked */
                if (r < 0)
                        goto fail;
        }

        meta->capacity = spec->capacity;
        meta->ctime = g_get_real_time() / G_USEC_PER_SEC;
        g_free(meta->description);
        meta->description = g_strdup(spec->description ? spec->description : "");
        g_free(meta->disktype);
        meta->disktype = g_strdup(spec->disktype ? spec->disktype : "DATA");
        g_strlcpy(meta->domain, ref->sd, sizeof(meta->domain));
        g_strlcpy(meta->image, ref->img, sizeof(meta->image));
        g_strlcpy(meta->parent, spec->parent ? spec->parent : FY_ZERO_UUID, sizeof(meta->parent));
        meta->format = spec->format;
        meta->type = spec->type;
        meta->voltype = FY_VOLTYPE_LEAF;
        meta->generation = 0;
        /* ILLEGAL until every piece exists: a crash leaves a volume nobody may use. */
        meta->legality = FY_LEGALITY_ILLEGAL;
        r = agent_volume_meta_write(a, ref, meta, error);
        if (r < 0)
                goto out;

        path = agent_volume_path(a, ref);
        lease_path = agent_volume_lease_path(a, ref);
        lease = (struct agent_lease) { ref->sd, ref->vol, lease_path, 0 };
        r = create_sized_file(lease_path, AGENT_VOLUME_LEASE_SIZE, false, error);
        if (r < 0)
                goto fail;
        r = agent_lease_format(&lease, error);
        if (r < 0)
                goto fail;

        if (spec->format == FY_FORMAT_RAW) {
                r = create_sized_file(path, spec->capacity, spec->type == FY_TYPE_PREALLOCATED, error);
        } else {
                r = agent_qemu_img_create_qcow2(path, spec->capacity, spec->type == FY_TYPE_PREALLOCATED,
                                                spec->parent,
                                                parent ? (parent->format == FY_FORMAT_COW ? "qcow2" : "raw") : NULL,
                                                error);
        }
        if (r < 0)
                goto fail;

        if (!shared && parent && parent->voltype == FY_VOLTYPE_LEAF) {
                parent->voltype = FY_VOLTYPE_INTERNAL;
                r = agent_volume_meta_write(a, &pref, parent, error);
                if (r < 0)
                        goto fail;
        }
        meta->legality = FY_LEGALITY_LEGAL;
        r = agent_volume_meta_write(a, ref, meta, error);
        if (r < 0)
                goto fail;
        goto out;
fail:
        volume_remove_files(a, ref);
        if (linked) {
                struct agent_volref lref;
                g_autofree char *dir = agent_image_path(a, ref->sd, ref->img);

                /* Only links, and only when no other layer of this image uses them. */
                agent_volref_init(&lref, ref->sd, ref->img, spec->parent);
                volume_unshare_unused(a, &lref);
                rmdir(dir);
        }
out:
        agent_volume_lease_drop(&plock);
        return r;
}

int agent_volume_children(struct agent *a, const struct agent_volref *ref, GPtrArray **ret)
{
        g_autofree char *dir = agent_image_path(a, ref->sd, ref->img);
        json_t *vols = image_volumes(dir);
        GPtrArray *children = g_ptr_array_new_with_free_func(g_free);
        size_t i;
        json_t *v;

        json_array_foreach(vols, i, v) {
                struct agent_volref cref;
                g_autoptr(fy_volume_meta) m = NULL;

                if (strcmp(json_string_value(v), ref->vol) == 0)
                        continue;
                agent_volref_init(&cref, ref->sd, ref->img, json_string_value(v));
                if (agent_volume_meta_read(a, &cref, &m, NULL) == 0 && g_ascii_strcasecmp(m->parent, ref->vol) == 0)
                        g_ptr_array_add(children, g_strdup(cref.vol));
        }
        json_decref(vols);
        *ret = children;
        return 0;
}

/* Removes the links of a template volume from an image once no volume of that image has it as parent. */
static void volume_unshare_unused(struct agent *a, const struct agent_volref *lref)
{
        g_autoptr(GPtrArray) children = NULL;
        g_autoptr(fy_volume_meta) meta = NULL;

        if (agent_volume_meta_read(a, lref, &meta, NULL) < 0 || !agent_volume_is_foreign(lref, meta))
                return;        /* not a link (or gone): nothing of ours to remove */
        agent_volume_children(a, lref, &children);
        if (children->len == 0)
                volume_remove_files(a, lref);
}

int agent_volume_delete(struct agent *a, const struct agent_volref *ref, GError **error)
{
        g_autoptr(fy_volume_meta) meta = NULL;
        g_autoptr(fy_volume_meta) parent = NULL;
        g_autoptr(GPtrArray) children = NULL;
        g_autofree char *dir = NULL;
        struct agent_volume_lease vlock = { 0 }, plock = { 0 };
        struct agent_volref pref;
        bool fix_parent = false;
        int r;

        r = agent_volume_meta_read(a, ref, &meta, error);
        if (r < 0)
                return r;
        agent_volume_children(a, ref, &children);
        if (children->len > 0) {
                g_set_error(error, FY_ERROR, FY_ERR_VOLUME_HAS_CHILDREN,
                            "volume %s has %u child volume(s), e.g. %s; delete them first",
                            ref->vol, children->len, (char *) children->pdata[0]);
                return -EBUSY;
        }
        if (agent_volume_is_foreign(ref, meta)) {
                /* A template's volume linked here: drop the links, never the template's lease or data. */
                dir = agent_image_path(a, ref->sd, ref->img);
                volume_remove_files(a, ref);
                rmdir(dir);
                return 0;
        }
        /* Held for the whole delete: nobody may start using it while it goes. */
        r = agent_volume_lease_take(a, ref, FY_ERR_VOLUME_IN_USE, true, &vlock, error);
        if (r < 0)
                goto out;
        g_clear_pointer(&meta, fy_volume_meta_free);
        r = agent_volume_meta_read(a, ref, &meta, error);
        if (r < 0)
                goto out;

        if (fy_uuid_is_valid(meta->parent) && strcmp(meta->parent, FY_ZERO_UUID) != 0) {
                g_autoptr(GPtrArray) siblings = NULL;

                agent_volref_init(&pref, ref->sd, ref->img, meta->parent);
                agent_volume_children(a, &pref, &siblings);
                /* The parent becomes a LEAF again when this was its only child: its metadata changes under its lease. */
                if (siblings->len == 1 && agent_volume_meta_read(a, &pref, &parent, NULL) == 0 &&
                    parent->voltype == FY_VOLTYPE_INTERNAL) {
                        r = agent_volume_lease_take(a, &pref, FY_ERR_LEASE_ACQUIRE, false, &plock, error);
                        if (r < 0) {
                                g_prefix_error(error, "parent: ");
                                goto out;
                        }
                        fix_parent = true;
                }
        }

        /* Mark it unusable first so a crash mid-delete never leaves a LEGAL half volume. */
        meta->legality = FY_LEGALITY_ILLEGAL;
        r = agent_volume_meta_write(a, ref, meta, error);
        if (r < 0)
                goto out;
        {
                g_autofree char *path = agent_volume_path(a, ref);

                /* Not gone: the volume stays (ILLEGAL, metadata kept) for a delete again, never leaks its data. */
                if (unlink(path) < 0 && errno != ENOENT) {
                        r = -errno;
                        g_set_error(error, FY_ERROR, FY_ERR_GENERAL, "cannot remove the data of volume %s: %s; it stays "
                                    "ILLEGAL until it is deleted again", ref->vol, g_strerror(-r));
                        goto out;
                }
        }
        /* Released before its file goes: sanlock must never write to an unlinked lease. */
        agent_volume_lease_drop(&vlock);
        volume_remove_files(a, ref);
        if (fy_uuid_is_valid(meta->parent) && strcmp(meta->parent, FY_ZERO_UUID) != 0) {
                struct agent_volref lref;

                agent_volref_init(&lref, ref->sd, ref->img, meta->parent);
                volume_unshare_unused(a, &lref);
        }

        if (fix_parent) {
                g_autoptr(GPtrArray) siblings = NULL;

                g_clear_pointer(&parent, fy_volume_meta_free);
                agent_volume_children(a, &pref, &siblings);
                if (siblings->len == 0 && agent_volume_meta_read(a, &pref, &parent, NULL) == 0 &&
                    parent->voltype == FY_VOLTYPE_INTERNAL) {
                        parent->voltype = FY_VOLTYPE_LEAF;
                        r = agent_volume_meta_write(a, &pref, parent, error);
                        if (r < 0)
                                goto out;
                }
        }
        dir = agent_image_path(a, ref->sd, ref->img);
        rmdir(dir);            /* only succeeds when it was the last volume */
        r = 0;
out:
        agent_volume_lease_drop(&plock);
        agent_volume_lease_drop(&vlock);
        return r;
}

int agent_image_delete(struct agent *a, const char *sd, const char *img, GError **error)
{
        g_autofree char *dir = agent_image_path(a, sd, img);
        g_autofree struct agent_volume_lease *locks = NULL;
        g_autofree bool *foreign = NULL;
        json_t *vols;
        size_t i, n;
        json_t *v;
        int r = 0;

        if (agent_sd_check(a, sd, error) < 0)
                return -ENOENT;
        if (!g_file_test(dir, G_FILE_TEST_IS_DIR)) {
                g_set_error(error, FY_ERROR, FY_ERR_IMAGE_DOES_NOT_EXIST,
                            "image %s does not exist in storage domain %s", img, sd);
                return -ENOENT;
        }
        vols = image_volumes(dir);
        n = json_array_size(vols);
        locks = g_new0(struct agent_volume_lease, n);
        foreign = g_new0(bool, n);
        /* Every volume's lease first: one in use anywhere and nothing is touched. */
        json_array_foreach(vols, i, v) {
                struct agent_volref ref;
                g_autoptr(fy_volume_meta) meta = NULL;

                agent_volref_init(&ref, sd, img, json_string_value(v));
                /* A template's volume linked into this image: only its links go, its lease stays free. */
                foreign[i] = agent_volume_meta_read(a, &ref, &meta, NULL) == 0 && agent_volume_is_foreign(&ref, meta);
                if (foreign[i])
                        continue;
                r = agent_volume_lease_take(a, &ref, FY_ERR_VOLUME_IN_USE, true, &locks[i], error);
                if (r < 0)
                        goto out;
        }
        json_array_foreach(vols, i, v) {
                struct agent_volref ref;
                g_autoptr(fy_volume_meta) meta = NULL;

                agent_volref_init(&ref, sd, img, json_string_value(v));
                if (!foreign[i] && agent_volume_meta_read(a, &ref, &meta, NULL) == 0) {
                        meta->legality = FY_LEGALITY_ILLEGAL;
                        agent_volume_meta_write(a, &ref, meta, NULL);
                }
        }
        json_array_foreach(vols, i, v) {
                struct agent_volref ref;
                g_autofree char *path = NULL;

                agent_volref_init(&ref, sd, img, json_string_value(v));
                path = agent_volume_path(a, &ref);
                unlink(path);
        }
        for (i = 0; i < n; i++)
                agent_volume_lease_drop(&locks[i]);
        json_array_foreach(vols, i, v) {
                struct agent_volref ref;

                agent_volref_init(&ref, sd, img, json_string_value(v));
                volume_remove_files(a, &ref);
        }
        if (rmdir(dir) < 0)
                r = fail_errno(error, FY_ERR_GENERAL, errno,
                               "image %s: volumes removed but the folder %s is not empty", img, dir);
out:
        for (i = 0; i < n; i++)
                agent_volume_lease_drop(&locks[i]);
        json_decref(vols);
        return r;
}

json_t *agent_volume_info(struct agent *a, const struct agent_volref *ref, GError **error)
{
        g_autoptr(fy_volume_meta) meta = NULL;
        g_autofree char *path = NULL;
        g_autofree char *lease_path = NULL;
        g_autoptr(GArray) owners = NULL;
        struct agent_lease lease;
        guint64 version = 0;
        struct stat st;
        json_t *info, *jowners;

        if (agent_volume_meta_read(a, ref, &meta, error) < 0)
                return NULL;
        path = agent_volume_path(a, ref);
        lease_path = agent_volume_lease_path(a, ref);
        if (stat(path, &st) < 0)
                memset(&st, 0, sizeof(st));
        lease = (struct agent_lease) { ref->sd, ref->vol, lease_path, 0 };
        jowners = json_array();
        if (agent_lease_owners(&lease, &owners, &version, NULL) == 0)
                for (guint i = 0; i < owners->len; i++)
                        json_array_append_new(jowners, json_integer((json_int_t) g_array_index(owners, guint64, i)));

        info = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:i, s:s,"
                         " s:{s:s, s:i, s:o, s:I}}",
                         "uuid", ref->vol,
                         "domain", meta->domain,
                         "image", meta->image,
                         "parent", meta->parent,
                         "format", fy_vol_format_to_string(meta->format),
                         "type", fy_vol_type_to_string(meta->type),
                         "voltype", fy_vol_voltype_to_string(meta->voltype),
                         "disktype", meta->disktype,
                         "description", meta->description,
                         "legality", fy_vol_legality_to_string(meta->legality),
                         "status", meta->legality == FY_LEGALITY_LEGAL ? "OK" : "ILLEGAL",
                         "capacity", (json_int_t) meta->capacity,
                         "apparentsize", (json_int_t) st.st_size,
                         "truesize", (json_int_t) st.st_blocks * 512,
                         "ctime", (json_int_t) meta->ctime,
                         "generation", (int) meta->generation,
                         "path", path,
                         "lease", "path", lease_path, "offset", 0, "owners", jowners, "version", (json_int_t) version);
        return info;
}
