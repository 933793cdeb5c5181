/* leadline's own JACK MIDI client: frame-stamped input, output written at the frame it is due.
 *
 * python-rtmidi's JACK backend calls Python from JACK's process thread (which must then take the GIL)
 * and writes every outgoing event at offset 0 of the cycle the Python thread happened to run before.
 * Here the process callback never touches Python:
 *   - input: each event is stamped with its JACK frame (cycle start + offset, 64-bit) and the input it came
 *     on (0: the player's, 1: the band's, when that port is open), copied to a lock-free ring buffer in
 *     time order, and one byte on a pipe wakes the reader thread in Python;
 *   - output: Python queues timed messages (frame, message) in due order; each cycle writes the ones due
 *     in it at their exact offset (late ones at offset 0). Untimed messages (stop paths, echoes) have a
 *     ring of their own, written first in the next cycle, never queued behind timed ones.
 *   - flush (every stop path, before its note-offs): timed note-ons and pitch bends queued before it are
 *     dropped (the stop path recentres), other timed messages (note-offs of notes that did start) go at once. Each message carries the flush
 *     generation it was queued in; an untimed message newer than the generation a cycle started with
 *     waits for the next cycle, so a note-off can never be written before a dropped-too-late note-on.
 *   - tap: every message written to the output goes, with the frame it was written at, to a third ring
 *     that Python drains (ll_tap) when it likes: the record of what actually left, flushes included.
 * Built once by daemon/jacknative.py with the system's gcc and libjack headers (libjack-jackd2-dev).
 */
#include <errno.h>
#include <fcntl.h>
#include <jack/jack.h>
#include <jack/midiport.h>
#include <jack/ringbuffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RING_BYTES (1 << 18)
#define MAX_EVENT 256 /* longer events (SysEx) are not for leadline: dropped */

typedef struct {
    uint64_t frame; /* output: 0 = as soon as possible */
    uint32_t gen;   /* output: the flush generation it was queued in; input: the port (0 player, 1 backing) */
    uint32_t size;
} header_t;

typedef struct {
    jack_client_t *client;
    jack_port_t *in, *backing, *out; /* backing: NULL when not opened */
    jack_ringbuffer_t *in_ring, *out_ring, *now_ring, *tap_ring;
    int wake[2];                 /* pipe: the process thread writes a byte when input came */
    volatile uint64_t cycle64;   /* frame of the current cycle's start, 64-bit */
    volatile uint32_t gen;       /* current flush generation (written by Python, read by the RT thread) */
    volatile uint32_t dropped_in, late_out, dropped_out, dropped_tap;
    volatile int shutdown, tap; /* tap: messages written go to tap_ring (ll_tap_on) */
    uint32_t last32;
    uint64_t high;
} ll_t;

static uint64_t extend(ll_t *ll, uint32_t f32) {
    if (f32 < ll->last32) ll->high += (uint64_t)1 << 32;
    ll->last32 = f32;
    return ll->high | f32;
}

/* Write one event to the output and, when it fits, to the tap (its frame: cycle start + offset). */
static void out(ll_t *ll, void *outbuf, uint64_t start, uint32_t off, const unsigned char *data, uint32_t size) {
    if (jack_midi_event_write(outbuf, off, data, size) != 0) {
        ll->dropped_out++;
        return;
    }
    header_t h = {start + off, 0, size};
    if (!ll->tap) return;
    if (jack_ringbuffer_write_space(ll->tap_ring) < sizeof h + size) {
        ll->dropped_tap++;
        return;
    }
    jack_ringbuffer_write(ll->tap_ring, (const char *)&h, sizeof h);
    jack_ringbuffer_write(ll->tap_ring, (const char *)data, size);
}

static int process(jack_nframes_t nframes, void *arg) {
    ll_t *ll = arg;
    uint64_t start = extend(ll, jack_last_frame_time(ll->client));
    __atomic_store_n(&ll->cycle64, start, __ATOMIC_RELEASE);

    /* the inputs' events merged in time order (the player's first at the same offset) */
    void *inbuf[2] = {jack_port_get_buffer(ll->in, nframes),
                      ll->backing ? jack_port_get_buffer(ll->backing, nframes) : NULL};
    uint32_t count[2] = {jack_midi_get_event_count(inbuf[0]), inbuf[1] ? jack_midi_get_event_count(inbuf[1]) : 0};
    uint32_t next[2] = {0, 0}, queued = 0;
    while (next[0] < count[0] || next[1] < count[1]) {
        jack_midi_event_t ev[2];
        int ok[2] = {0, 0};
        for (int p = 0; p < 2; p++)
            ok[p] = next[p] < count[p] && jack_midi_event_get(&ev[p], inbuf[p], next[p]) == 0;
        int p = ok[0] && (!ok[1] || ev[0].time <= ev[1].time) ? 0 : ok[1] ? 1 : -1;
        if (p < 0) { /* neither could be read: skip them */
            next[0] += next[0] < count[0];
            next[1] += next[1] < count[1];
            continue;
        }
        next[p]++;
        if (ev[p].size == 0 || ev[p].size > MAX_EVENT || ev[p].buffer[0] == 0xF0 || ev[p].buffer[0] == 0xFE) continue;
        header_t h = {start + ev[p].time, (uint32_t)p, (uint32_t)ev[p].size};
        if (jack_ringbuffer_write_space(ll->in_ring) < sizeof h + ev[p].size) {
            ll->dropped_in++;
            continue;
        }
        jack_ringbuffer_write(ll->in_ring, (const char *)&h, sizeof h);
        jack_ringbuffer_write(ll->in_ring, (const char *)ev[p].buffer, ev[p].size);
        queued++;
    }
    if (queued) {
        char b = 1;
        if (write(ll->wake[1], &b, 1) < 0) { /* full pipe: the reader is awake anyway */ }
    }

    void *outbuf = jack_port_get_buffer(ll->out, nframes);
    jack_midi_clear_buffer(outbuf);
    uint32_t gen = __atomic_load_n(&ll->gen, __ATOMIC_ACQUIRE), last_off = 0;
    uint64_t end = start + nframes;
    header_t h;
    unsigned char data[MAX_EVENT];
    /* 1. timed messages queued before a flush (they come first in the ring): note-ons and bends dropped, the rest
     *    (note-offs of notes that did start) written now */
    while (jack_ringbuffer_peek(ll->out_ring, (char *)&h, sizeof h) == sizeof h &&
           jack_ringbuffer_read_space(ll->out_ring) >= sizeof h + h.size && (int32_t)(h.gen - gen) < 0) {
        jack_ringbuffer_read_advance(ll->out_ring, sizeof h);
        jack_ringbuffer_read(ll->out_ring, (char *)data, h.size);
        if ((data[0] & 0xF0) == 0x90 && h.size == 3 && data[2]) continue;
        if ((data[0] & 0xF0) == 0xE0) continue; /* a cut note's later bend: the stop path sends the centre */
        out(ll, outbuf, start, 0, data, h.size);
    }
    /* 2. untimed messages, at the cycle's start */
    while (jack_ringbuffer_peek(ll->now_ring, (char *)&h, sizeof h) == sizeof h &&
           jack_ringbuffer_read_space(ll->now_ring) >= sizeof h + h.size) {
        if ((int32_t)(h.gen - gen) > 0) break; /* queued after a flush this cycle has not seen */
        jack_ringbuffer_read_advance(ll->now_ring, sizeof h);
        jack_ringbuffer_read(ll->now_ring, (char *)data, h.size);
        out(ll, outbuf, start, 0, data, h.size);
    }
    /* 3. timed messages due in this cycle, at their frame (late ones at its start) */
    while (jack_ringbuffer_peek(ll->out_ring, (char *)&h, sizeof h) == sizeof h &&
           jack_ringbuffer_read_space(ll->out_ring) >= sizeof h + h.size) {
        if (h.gen != gen || h.frame >= end) break; /* after a flush this cycle has not seen, or due later */
        jack_ringbuffer_read_advance(ll->out_ring, sizeof h);
        jack_ringbuffer_read(ll->out_ring, (char *)data, h.size);
        uint32_t off = h.frame > start ? (uint32_t)(h.frame - start) : 0;
        if (h.frame < start) ll->late_out++;
        if (off < last_off) off = last_off; /* JACK wants events in time order */
        out(ll, outbuf, start, off, data, h.size);
        last_off = off;
    }
    return 0;
}

static void on_shutdown(void *arg) { ((ll_t *)arg)->shutdown = 1; }

void ll_close(ll_t *ll) {
    if (!ll) return;
    if (ll->client) {
        jack_deactivate(ll->client);
        jack_client_close(ll->client);
    }
    if (ll->in_ring) jack_ringbuffer_free(ll->in_ring);
    if (ll->out_ring) jack_ringbuffer_free(ll->out_ring);
    if (ll->now_ring) jack_ringbuffer_free(ll->now_ring);
    if (ll->tap_ring) jack_ringbuffer_free(ll->tap_ring);
    if (ll->wake[0] >= 0) close(ll->wake[0]);
    if (ll->wake[1] >= 0) close(ll->wake[1]);
    free(ll);
}

/* Open and activate a client with one MIDI input (two when `backing_port` is a name, not NULL or empty) and
 * one MIDI output; NULL and *status on failure (a jack_status_t, or -1 for a port or memory failure). */
ll_t *ll_open(const char *name, const char *in_port, const char *backing_port, const char *out_port, int *status) {
    jack_status_t st = 0;
    ll_t *ll = calloc(1, sizeof *ll);
    if (!ll) { *status = -1; return NULL; }
    ll->wake[0] = ll->wake[1] = -1;
    ll->client = jack_client_open(name, JackNoStartServer, &st);
    *status = (int)st;
    if (!ll->client) { ll_close(ll); return NULL; }
    ll->in = jack_port_register(ll->client, in_port, JACK_DEFAULT_MIDI_TYPE, JackPortIsInput, 0);
    if (backing_port && *backing_port) {
        ll->backing = jack_port_register(ll->client, backing_port, JACK_DEFAULT_MIDI_TYPE, JackPortIsInput, 0);
        if (!ll->backing) { *status = -1; ll_close(ll); return NULL; }
    }
    ll->out = jack_port_register(ll->client, out_port, JACK_DEFAULT_MIDI_TYPE, JackPortIsOutput, 0);
    ll->in_ring = jack_ringbuffer_create(RING_BYTES);
    ll->out_ring = jack_ringbuffer_create(RING_BYTES);
    ll->now_ring = jack_ringbuffer_create(RING_BYTES);
    ll->tap_ring = jack_ringbuffer_create(RING_BYTES);
    if (!ll->in || !ll->out || !ll->in_ring || !ll->out_ring || !ll->now_ring || !ll->tap_ring ||
        pipe(ll->wake) != 0) {
        *status = -1;
        ll_close(ll);
        return NULL;
    }
    fcntl(ll->wake[0], F_SETFL, O_NONBLOCK);
    fcntl(ll->wake[1], F_SETFL, O_NONBLOCK);
    jack_ringbuffer_mlock(ll->in_ring);
    jack_ringbuffer_mlock(ll->out_ring);
    jack_ringbuffer_mlock(ll->now_ring);
    jack_ringbuffer_mlock(ll->tap_ring);
    jack_on_shutdown(ll->client, on_shutdown, ll);
    if (jack_set_process_callback(ll->client, process, ll) != 0 || jack_activate(ll->client) != 0) {
        *status = -1;
        ll_close(ll);
        return NULL;
    }
    return ll;
}

uint32_t ll_rate(ll_t *ll) { return jack_get_sample_rate(ll->client); }
int ll_fd(ll_t *ll) { return ll->wake[0]; }
int ll_alive(ll_t *ll) { return !ll->shutdown; }
const char *ll_in_name(ll_t *ll) { return jack_port_name(ll->in); }
const char *ll_backing_name(ll_t *ll) { return ll->backing ? jack_port_name(ll->backing) : ""; }
const char *ll_out_name(ll_t *ll) { return jack_port_name(ll->out); }

/* The JACK frame now (jack_frame_time, interpolated within the cycle), on the 64-bit count. */
uint64_t ll_frame_now(ll_t *ll) {
    uint64_t c = __atomic_load_n(&ll->cycle64, __ATOMIC_ACQUIRE);
    return c + (int64_t)(int32_t)(jack_frame_time(ll->client) - (uint32_t)c);
}

static int take(jack_ringbuffer_t *ring, uint64_t *frame, uint32_t *port, unsigned char *buf, int cap) {
    header_t h;
    if (jack_ringbuffer_peek(ring, (char *)&h, sizeof h) != sizeof h) return 0;
    if (jack_ringbuffer_read_space(ring) < sizeof h + h.size) return 0;
    jack_ringbuffer_read_advance(ring, sizeof h);
    if ((int)h.size > cap) {
        jack_ringbuffer_read_advance(ring, h.size);
        return -1;
    }
    jack_ringbuffer_read(ring, (char *)buf, h.size);
    *frame = h.frame;
    if (port) *port = h.gen;
    return (int)h.size;
}

/* One input event: its size (copied to buf, *frame and *port set: 0 the player's, 1 the band's), 0 when
 * none is waiting. */
int ll_read(ll_t *ll, uint64_t *frame, uint32_t *port, unsigned char *buf, int cap) {
    return take(ll->in_ring, frame, port, buf, cap);
}

/* Whether the output's messages go to the tap (off when nobody drains it: a take is recorded). */
void ll_tap_on(ll_t *ll, int on) { __atomic_store_n(&ll->tap, on, __ATOMIC_RELEASE); }

/* One message the output wrote, at *frame: its size, 0 when none is waiting. */
int ll_tap(ll_t *ll, uint64_t *frame, unsigned char *buf, int cap) { return take(ll->tap_ring, frame, NULL, buf, cap); }

/* Queue `msg` for the frame it is due at, in due order; frame 0: untimed, first thing in the next cycle.
 * -1 when the ring is full. */
int ll_send(ll_t *ll, uint64_t frame, const unsigned char *msg, int size) {
    jack_ringbuffer_t *ring = frame ? ll->out_ring : ll->now_ring;
    header_t h = {frame, __atomic_load_n(&ll->gen, __ATOMIC_ACQUIRE), (uint32_t)size};
    if (size <= 0 || size > MAX_EVENT || jack_ringbuffer_write_space(ring) < sizeof h + size) return -1;
    jack_ringbuffer_write(ring, (const char *)&h, sizeof h);
    jack_ringbuffer_write(ring, (const char *)msg, size);
    return 0;
}

/* Timed note-ons and pitch bends queued and not yet written are dropped (stop paths send their note-offs
 * and the bend's centre after this). */
void ll_flush(ll_t *ll) { __atomic_add_fetch(&ll->gen, 1, __ATOMIC_ACQ_REL); }

int ll_connect(ll_t *ll, const char *src, const char *dst) {
    int r = jack_connect(ll->client, src, dst);
    return r == EEXIST ? 0 : r;
}

/* Whether a port of that full name exists now. */
int ll_port_exists(ll_t *ll, const char *name) { return jack_port_by_name(ll->client, name) != NULL; }

/* Ports whose names match `pattern` (a regex; NULL: all) and are MIDI, with these flags: written to
 * buf NUL-separated; the count, or -1 if buf is too small. */
int ll_ports(ll_t *ll, const char *pattern, unsigned long flags, char *buf, int cap) {
    const char **ports = jack_get_ports(ll->client, pattern, JACK_DEFAULT_MIDI_TYPE, flags);
    int n = 0, used = 0;
    if (!ports) return 0;
    for (; ports[n]; n++) {
        int len = (int)strlen(ports[n]) + 1;
        if (used + len > cap) { jack_free(ports); return -1; }
        memcpy(buf + used, ports[n], len);
        used += len;
    }
    jack_free(ports);
    return n;
}

/* Whether output is still queued (a close waits for it). */
int ll_pending(ll_t *ll) {
    return jack_ringbuffer_read_space(ll->now_ring) > 0 || jack_ringbuffer_read_space(ll->out_ring) > 0;
}

uint32_t ll_dropped_in(ll_t *ll) { return ll->dropped_in; }
uint32_t ll_late_out(ll_t *ll) { return ll->late_out; }
uint32_t ll_dropped_out(ll_t *ll) { return ll->dropped_out; }
uint32_t ll_dropped_tap(ll_t *ll) { return ll->dropped_tap; }
