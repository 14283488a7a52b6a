/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>

#include "hashmap.h"
#include "job.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "worker-pool.h"

/*
 * Fairness between owners
 * -----------------------
 * Work blocks for as long as its files do: a user whose image sits on a hung FUSE mount (or whose
 * opener is stopped) can keep a worker busy for ever. So each item carries its owner's key, pending
 * work queues per owner, and one owner may occupy at most 'cap' workers at once (n - 1 of n threads,
 * 1 with a single thread): whatever one owner does, a worker is left for the others. Owners that
 * have work and room under the cap take turns (a ring, round robin), one item per turn, so that
 * a user with a thousand queued steps does not make another user's single step wait behind them.
 */

typedef struct PoolOwner PoolOwner;

/* One unit of work: queued under its owner, then run, then in the done queue. */
typedef struct PoolItem {
        WorkerFunc run;
        WorkerFunc done;
        void *userdata;
        PoolOwner *owner;
        bool free_after;                /* allocated by worker_pool_call() */
        struct PoolItem *next;
} PoolItem;

typedef struct PoolQueue {
        PoolItem *head, *tail;
} PoolQueue;

struct PoolOwner {
        uint32_t key;

        /* Event-loop side: attached jobs and calls not yet delivered; freed at 0. Work in flight
         * always holds one, so a worker never sees an owner go away under it. */
        unsigned n_ref;
        LIST_FIELDS(PoolOwner, owners);

        /* Under the pool's lock. */
        PoolQueue pending;
        unsigned running;               /* items on a worker now */
        bool in_ring;
        PoolOwner *ring_next;
};

/* What the pool keeps per job: its timer, and its work item, reused for every submission (the
 * core submits at most one item per job at a time). */
typedef struct PoolJob {
        WorkerPool *pool;
        Job *job;
        sd_event_source *timer;
        PoolItem item;
} PoolJob;

struct WorkerPool {
        sd_event *event;
        sd_event_source *done_source;
        int done_fd;

        pthread_mutex_t lock;
        pthread_cond_t wake;
        PoolOwner *ring_head, *ring_tail; /* owners with pending work and room under the cap */
        PoolQueue done;                 /* run, waiting for the loop */
        bool stop;

        pthread_t *threads;
        unsigned n_threads;
        unsigned cap;                   /* workers one owner may occupy at once */

        /* Event-loop side only, no lock needed. */
        Hashmap *owners_by_key;         /* uint32_t key → PoolOwner */
        PoolOwner *owners;
        unsigned n_outstanding;         /* submitted, done callback not yet run */
        unsigned n_jobs;                /* jobs attached */
        WorkerFunc idle;
        void *idle_userdata;
};

static void queue_push(PoolQueue *q, PoolItem *i) {
        i->next = NULL;
        if (q->tail)
                q->tail->next = i;
        else
                q->head = i;
        q->tail = i;
}

static PoolItem *queue_pop(PoolQueue *q) {
        PoolItem *i = q->head;
        if (i) {
                q->head = i->next;
                if (!q->head)
                        q->tail = NULL;
                i->next = NULL;
        }
        return i;
}

/* ---- owners (the ring: under the lock; references: on the loop) ------------------------------ */

static void owner_key_hash(const void *key, SipHash *state) {
        siphash24_compress(key, sizeof(uint32_t), state);
}

static bool owner_key_equal(const void *a, const void *b) {
        return *(const uint32_t *) a == *(const uint32_t *) b;
}

static const HashOps owner_hash_ops = {
        .hash = owner_key_hash,
        .equal = owner_key_equal,
};

static int owner_get(WorkerPool *p, uint32_t key, PoolOwner **ret) {
        PoolOwner *o;

        o = hashmap_get(p->owners_by_key, &key);
        if (!o) {
                o = calloc(1, sizeof(*o));
                if (!o)
                        return -ENOMEM;
                o->key = key;
                if (hashmap_put(p->owners_by_key, &o->key, o) < 0) {
                        free(o);
                        return -ENOMEM;
                }
                LIST_PREPEND(owners, p->owners, o);
        }
        o->n_ref++;
        *ret = o;
        return 0;
}

static void owner_unref(WorkerPool *p, PoolOwner *o) {
        assert(o->n_ref > 0);
        if (--o->n_ref > 0)
                return;

        /* No work of this owner is queued or running: every item holds a reference. */
        assert(!o->pending.head && o->running == 0 && !o->in_ring);
        assert_se(hashmap_remove(p->owners_by_key, &o->key) == o);
        LIST_REMOVE(owners, p->owners, o);
        free(o);
}

/* Give the owner a turn at the end of the ring, if it has work and room under the cap. */
static void ring_offer(WorkerPool *p, PoolOwner *o) {
        if (o->in_ring || !o->pending.head || o->running >= p->cap)
                return;
        o->in_ring = true;
        o->ring_next = NULL;
        if (p->ring_tail)
                p->ring_tail->ring_next = o;
        else
                p->ring_head = o;
        p->ring_tail = o;
}

/* The next item in turn: the first owner's oldest; that owner goes to the back of the line. */
static PoolItem *ring_take(WorkerPool *p) {
        PoolOwner *o = p->ring_head;

        if (!o)
                return NULL;
        p->ring_head = o->ring_next;
        if (!p->ring_head)
                p->ring_tail = NULL;
        o->in_ring = false;
        o->ring_next = NULL;

        PoolItem *item = queue_pop(&o->pending);
        assert(item);
        o->running++;
        ring_offer(p, o);
        return item;
}

/* ---- the workers ------------------------------------------------------------------------------ */

static void *worker_main(void *userdata) {
        WorkerPool *p = userdata;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                PoolItem *item;
                bool was_empty;

                while (!p->stop && !p->ring_head)
                        pthread_cond_wait(&p->wake, &p->lock);
                if (p->stop)
                        break;

                item = ring_take(p);
                if (p->ring_head)
                        /* More to do than this worker: make sure an idle one looks. */
                        pthread_cond_signal(&p->wake);
                pthread_mutex_unlock(&p->lock);

                item->run(item->userdata);

                pthread_mutex_lock(&p->lock);
                item->owner->running--;
                ring_offer(p, item->owner);
                was_empty = !p->done.head;
                queue_push(&p->done, item);
                if (was_empty) {
                        /* One wakeup per batch: the loop drains the whole done queue. */
                        uint64_t one = 1;
                        if (write(p->done_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                                log_error_errno(errno, "Failed to wake the event loop: %m");
                }
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

static int on_work_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        WorkerPool *p = userdata;
        PoolQueue batch;
        uint64_t counter;

        if (read(fd, &counter, sizeof(counter)) < 0 && errno != EAGAIN && errno != EINTR)
                return log_error_errno(errno, "Failed to read the worker pool's eventfd: %m");

        pthread_mutex_lock(&p->lock);
        batch = p->done;
        p->done = (PoolQueue) {};
        pthread_mutex_unlock(&p->lock);

        for (PoolItem *item = batch.head, *next; item; item = next) {
                /* Handling the result may free this item's owner (a job and its PoolJob); never
                 * the owner of an item still in this batch, since those are busy. */
                next = item->next;
                if (item->free_after) {
                        /* A call: its reference on the owner ends with its delivery. */
                        PoolOwner *o = item->owner;
                        item->done(item->userdata);
                        free(item);
                        owner_unref(p, o);
                } else
                        item->done(item->userdata);

                assert(p->n_outstanding > 0);
                if (--p->n_outstanding == 0 && p->idle)
                        p->idle(p->idle_userdata);
        }
        return 0;
}

static void job_item_run(void *userdata) {
        PoolJob *pj = userdata;
        job_work_run(pj->job);
}

static void job_item_done(void *userdata) {
        PoolJob *pj = userdata;
        job_work_done(pj->job);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        PoolJob *pj = userdata;
        job_timer_fired(pj->job);
        return 0;
}

static uint64_t pool_now(void *userdata) {
        struct timespec ts;

        assert_se(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

static int pool_attach(void *userdata, Job *j) {
        WorkerPool *p = userdata;
        PoolOwner *o;
        PoolJob *pj;
        int r;

        pj = calloc(1, sizeof(*pj));
        if (!pj)
                return -ENOMEM;
        r = owner_get(p, job_owner(j), &o);
        if (r < 0) {
                free(pj);
                return r;
        }
        pj->pool = p;
        pj->job = j;
        pj->item = (PoolItem) { .run = job_item_run, .done = job_item_done, .userdata = pj, .owner = o };

        /* Accuracy 1 µs: sd-event's default would coalesce wakeups by up to 250 ms, far coarser
         * than the 100 ms slices of the rate limiter. */
        r = sd_event_add_time(p->event, &pj->timer, CLOCK_MONOTONIC, UINT64_MAX, 1, on_timer, pj);
        if (r < 0) {
                owner_unref(p, o);
                free(pj);
                return r;
        }
        (void) sd_event_source_set_enabled(pj->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(pj->timer, "job-timer");

        job_set_executor_data(j, pj);
        p->n_jobs++;
        return 0;
}

static void pool_detach(void *userdata, Job *j) {
        WorkerPool *p = userdata;
        PoolJob *pj = job_executor_data(j);

        if (!pj)
                return;
        assert(p->n_jobs > 0);
        p->n_jobs--;
        owner_unref(p, pj->item.owner);
        sd_event_source_disable_unref(pj->timer);
        job_set_executor_data(j, NULL);
        free(pj);
}

static void pool_enqueue(WorkerPool *p, PoolItem *item) {
        p->n_outstanding++;

        pthread_mutex_lock(&p->lock);
        queue_push(&item->owner->pending, item);
        ring_offer(p, item->owner);
        pthread_cond_signal(&p->wake);
        pthread_mutex_unlock(&p->lock);
}

static void pool_submit(void *userdata, Job *j) {
        PoolJob *pj = job_executor_data(j);
        pool_enqueue(userdata, &pj->item);
}

int worker_pool_call(WorkerPool *p, uint32_t owner, WorkerFunc run, WorkerFunc done, void *userdata) {
        PoolOwner *o;
        PoolItem *item;

        item = malloc(sizeof(*item));
        if (!item)
                return -ENOMEM;
        if (owner_get(p, owner, &o) < 0) {
                free(item);
                return -ENOMEM;
        }
        *item = (PoolItem) { .run = run, .done = done, .userdata = userdata, .owner = o, .free_after = true };
        pool_enqueue(p, item);
        return 0;
}

static void pool_set_timer(void *userdata, Job *j, uint64_t deadline) {
        PoolJob *pj = job_executor_data(j);
        int r;

        if (deadline == UINT64_MAX) {
                (void) sd_event_source_set_enabled(pj->timer, SD_EVENT_OFF);
                return;
        }

        /* Round up: waking a microsecond late is harmless, early would just sleep again. */
        r = sd_event_source_set_time(pj->timer, (deadline + NSEC_PER_USEC - 1) / NSEC_PER_USEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(pj->timer, SD_EVENT_ONESHOT);
        if (r < 0) {
                /* Cannot happen for an existing source short of memory corruption; fire at once
                 * rather than leave the job asleep forever. */
                log_error_errno(r, "Failed to arm timer of job '%s', waking it now: %m", job_id(j));
                job_timer_fired(j);
        }
}

const JobExecutor worker_pool_executor = {
        .now = pool_now,
        .attach = pool_attach,
        .detach = pool_detach,
        .submit = pool_submit,
        .set_timer = pool_set_timer,
};

int worker_pool_new(sd_event *event, unsigned n_threads, WorkerPool **ret) {
        sigset_t all, saved;
        WorkerPool *p;
        int r;

        assert(event && ret);

        if (n_threads == 0)
                n_threads = WORKER_POOL_THREADS_DEFAULT;
        if (n_threads > WORKER_POOL_THREADS_MAX)
                return -EINVAL;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(event);
        p->done_fd = -EBADF;
        p->cap = n_threads >= 2 ? n_threads - 1 : 1;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->wake, NULL);

        r = hashmap_new(&owner_hash_ops, &p->owners_by_key);
        if (r < 0)
                goto fail;

        p->threads = calloc(n_threads, sizeof(pthread_t));
        if (!p->threads) {
                r = -ENOMEM;
                goto fail;
        }

        p->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->done_fd < 0) {
                r = negative_errno();
                goto fail;
        }

        r = sd_event_add_io(event, &p->done_source, p->done_fd, EPOLLIN, on_work_done, p);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(p->done_source, "worker-pool-done");

        /* Threads inherit the signal mask: block everything so that signals go to the loop. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        for (; p->n_threads < n_threads; p->n_threads++) {
                r = -pthread_create(&p->threads[p->n_threads], NULL, worker_main, p);
                if (r < 0)
                        break;
        }
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (r < 0)
                goto fail;

        *ret = p;
        return 0;

fail:
        worker_pool_free(p);
        return r;
}

/* Only calls can be left over (jobs are gone): free them and their references. */
static unsigned queue_drop(WorkerPool *p, PoolQueue *q) {
        unsigned n = 0;

        for (PoolItem *item; (item = queue_pop(q)); n++) {
                PoolOwner *o = item->owner;
                assert(item->free_after);
                free(item);
                owner_unref(p, o);
        }
        return n;
}

WorkerPool *worker_pool_free(WorkerPool *p) {
        unsigned dropped;

        if (!p)
                return NULL;

        /* A job's work item lives in its PoolJob and ends only through job_work_done(): freeing
         * the pool under a job is a bug in the caller, not a shutdown. */
        assert(p->n_jobs == 0);

        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);

        /* Nobody is left to receive these: calls queued behind the shutdown, and results the loop
         * did not get to. Their owners were told to wait for the idle callback if they care. */
        dropped = queue_drop(p, &p->done);
        p->ring_head = p->ring_tail = NULL;
        for (PoolOwner *o = p->owners, *next; o; o = next) {
                /* Taken out first: dropping the last item frees the owner. */
                PoolQueue q = o->pending;
                next = o->owners_next;
                o->pending = (PoolQueue) {};
                o->in_ring = false;
                dropped += queue_drop(p, &q);
        }
        assert(!p->owners);
        hashmap_free(p->owners_by_key);
        if (dropped > 0)
                log_debug("Worker pool: dropped %u call(s) still outstanding at shutdown.", dropped);

        sd_event_source_disable_unref(p->done_source);
        safe_close(p->done_fd);
        sd_event_unref(p->event);
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
        free(p->threads);
        free(p);
        return NULL;
}

unsigned worker_pool_n_threads(const WorkerPool *p) {
        return p->n_threads;
}

unsigned worker_pool_n_outstanding(const WorkerPool *p) {
        return p->n_outstanding;
}

void worker_pool_set_idle_callback(WorkerPool *p, WorkerFunc idle, void *userdata) {
        p->idle = idle;
        p->idle_userdata = userdata;
}

unsigned worker_pool_owner_cap(const WorkerPool *p) {
        return p->cap;
}
