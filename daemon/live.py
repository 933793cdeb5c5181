"""The live loop: one thread owns the clock, the model state and the output; MIDI in arrives on a queue.

Each pass: take what the input callback queued (clock, notes, control; the band's notes, which set the
harmony the model hears and are never answered), advance the internal clock,
let the mode decide whether leadline plays, generate just ahead of the song position, and send what is
due on its predicted tick (slightly early: `engine.lookahead_ms`). Nothing here blocks on MIDI; every
way out goes through `all_off`, so no note is ever left sounding.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from leadline.daemon import codec, harmony
from leadline.daemon.clock import ClockEvent, ClockFollower, InternalClock
from leadline.daemon.codec import Note, TICKS_PER_BEAT
from leadline.daemon.countin import CountIn
from leadline.daemon.echo import EchoGuard
from leadline.daemon.expression import Bender
from leadline.daemon.headroom import TempoGuard, safe_bpm
from leadline.daemon.improviser import Improviser
from leadline.daemon.keeping import Keeping, Stats
from leadline.daemon.memory import echo_weight
from leadline.daemon.meter import CC_METERS, Meter, parse_meter
from leadline.daemon.modes import MODES, Conductor
from leadline.daemon.player import PlayerNotes
from leadline.daemon.sampler import estimate_key, key_histogram
from leadline.daemon.scheduler import (KIND_BEND, KIND_CLICK, KIND_NOTE_OFF, KIND_NOTE_ON, KIND_OTHER, KIND_PREBEND,
                                       NoteTracker, Scheduler, deadline, sleep_until)
from leadline.daemon.swing import Swing

log = logging.getLogger(__name__)

HORIZON = TICKS_PER_BEAT  # generate this far ahead of the song position
LATE_NS = 5_000_000  # a note-on more than this late is skipped, not played late
WAKE_NS = 1_200_000  # a message due within this is waited for (sleep, then spin) and sent
HANDOFF_NS = 8_000_000  # with a frame-accurate output (`send_at`): queued this far ahead with its time


class Live(Keeping):
    """Everything on the engine thread: clocks, conductor, improviser, output scheduling."""

    def __init__(self, cfg, engine, sampler, send) -> None:
        self.cfg, self.sampler, self._send = cfg, sampler, send
        self.echo = EchoGuard(cfg.midi.echo_ms)
        self.max_note = round((cfg.midi.max_note_beats or 0) * TICKS_PER_BEAT)  # ticks; 0 = no limit
        self.follower = ClockFollower.from_config(cfg.clock)
        self.internal = InternalClock(cfg.clock.bpm)
        self.external = cfg.clock.source == "external"
        self.meter = parse_meter(cfg.song.meter)
        self.conductor = Conductor(cfg.mode, cfg.respond, cfg.trade, horizon=HORIZON, meter=self.meter)
        self.improviser = Improviser(engine, sampler, cfg.seed.window, cfg.sampling.echo_player)
        self.improviser.bar = self.meter.bar
        self.backing = harmony.Backing()  # the band: midi.backing_port, midi.backing_channels
        self.backing_channels = frozenset(ch - 1 for ch in cfg.midi.backing_channels)
        self.improviser.harmony = self.backing.code
        self.clock_band = False  # the port whose MIDI clock is followed: the band's (else the player's)
        self.clock_seen_ns = None  # when that port last sent clock
        self.swing = Swing(cfg.song.swing, self.meter)
        self.count_in = CountIn(cfg.song.count_in, self.meter)
        self.tempo_guard = TempoGuard()
        self.start_p99_ms = 0.0  # step p99 timed at start-up (serve), until the live steps say more
        self.queue = Scheduler()
        self.tracker = NoteTracker()
        self.player = PlayerNotes()
        self.stats = Stats()
        self.enabled = True
        self.out_ch = cfg.midi.out_channel - 1
        self.bender = Bender(cfg.expression, self.out_ch)  # the notes' pitch bend (expression)
        self.lookahead_ns = int(cfg.engine.lookahead_ms * 1e6)
        self.recorder = None  # leadline.daemon.recording.Recorder: takes (and their session logs)
        self.learn = None  # leadline.daemon.learn.Learn while MIDI learn runs
        self.on_learned = None  # on_learned(control): keep a learned mapping (ControlConfig) in the config file
        self.now_ns = time.perf_counter_ns  # the timebase (leadline's own JACK client: its frame time)
        self.send_at = None  # a frame-accurate output: send_at(t_ns, msg) (leadline.daemon.jacknative)
        self.flush_out = None  # ... and its flush: drops timed note-ons not yet written
        self.drain_out = None  # ... and what it wrote: drain_out(callback(t_ns, msg)) (else: sent is written)
        self.out_pending = lambda: False  # ... whether messages handed over are still to be written
        self.take_ending = False  # a take ends once what was handed over has left (`settle`)
        self.end_tick = self.end_ns = 0  # ... at this song tick and time (the Stop's)
        self.phrase = None
        self.clock_out = 0  # next internal tick whose MIDI clock message is not yet scheduled
        self.quiet = False  # no note-on sent since the last All Notes Off (the first stop path sends one)
        self._held_checked = -1  # the tick at which held notes were last checked against midi.max_held_beats
        self._tempo_checked = -1  # the beat at which the tempo was last checked against the safe tempo

    def use_frame_output(self, io) -> None:
        """Time and send through a frame-accurate output (leadline's own JACK client): its frame time is
        the timebase, messages are handed over with their due time, stop paths flush it first, and no
        lookahead is needed (JACK writes each note at its tick's frame)."""
        self.now_ns, self.send_at, self.flush_out = io.now_ns, io.send_at, io.flush
        self.drain_out = getattr(io, "drain_sent", None)
        self.out_pending = getattr(io, "pending", self.out_pending)
        if self.drain_out is not None and self.recorder is not None:
            self.drain_out(self.left)  # (the first drain turns the output's tap on)
        self.lookahead_ns = 0

    # --- clocks ---------------------------------------------------------------------------------------
    @property
    def clock(self):
        return self.follower if self.external else self.internal

    @property
    def running(self) -> bool:
        """The song is rolling and a tick has come (before it, tick times cannot be predicted)."""
        c = self.clock
        return c.running and c.tick >= 0 and c.last_tick_ns != 0

    def start(self, now_ns: int) -> None:
        self.output_back()
        if not self.external:
            self.internal.start(now_ns)
            self._count_in()
            if self.cfg.clock.send_clock:
                self.send([0xFA])
        if self.recorder:
            self.recorder.begin(self.clock.bpm, self.take_state(), self.now_ns())

    def now_tick(self) -> int:
        return max(self.clock.tick, 0)

    def output_back(self) -> None:
        """The output is (again) there: at start and after a reconnect, the receiver's bend range (RPN 0)."""
        for msg in self.bender.rpn():
            self.send(msg)

    # --- input ------------------------------------------------------------------------------------------
    def handle(self, t_ns: int, msg: list[int], backing: bool = False) -> None:
        """One message that came in: on the player's input, or (`backing`) on the band's port."""
        if self.recorder is not None:
            self.recorder.inp(t_ns, msg, backing)
        if not backing and self.echo.echo(t_ns, msg):
            return  # leadline's own message back on its input (a loopback): not the player (the band's port is
            # not guarded: the band often strikes leadline's note on the beat, and is never answered anyway)
        status = msg[0]
        if status >= 0xF0:
            if (status in (0xF8, 0xFA, 0xFB, 0xFC, 0xF2) and self.cfg.clock.source != "internal"
                    and self._clock_port(t_ns, backing)):
                self._clock_message(t_ns, status, msg)
            return
        ch, kind = status & 0x0F, status & 0xF0
        if len(msg) < 3 or (msg[1] | msg[2]) > 0x7F:
            return  # truncated, unused (program change, aftertouch) or not MIDI (a data byte >= 0x80)
        if backing or ch in self.backing_channels:  # the band: heard, never the player (no answer, echo, control)
            self.backing.message(kind, msg[1], msg[2], self._tick_at(t_ns))
        elif kind == 0xB0:
            self._control(ch, msg[1], msg[2])
        elif kind in (0x80, 0x90) and (self.cfg.midi.in_channel in (0, ch + 1)):
            self._note(t_ns, ch, msg[1], msg[2] if kind == 0x90 else 0)

    def _clock_port(self, t_ns: int, backing: bool) -> bool:
        """Whether clock from this port is followed: the port that sent it last, unless it has been silent for
        half of clock.timeout_ms (before a dropout stops the song). A DAW that sends clock to both of leadline's
        inputs is followed on one, not heard twice as fast."""
        if backing != self.clock_band and self.clock_seen_ns is not None and \
                t_ns - self.clock_seen_ns < self.cfg.clock.timeout_ms * 5e5:
            return False
        self.clock_band, self.clock_seen_ns = backing, t_ns
        return True

    def _tick_at(self, t_ns: int) -> int:
        """The song tick of a message that came at `t_ns`."""
        return int(round(self.clock.tick_at(t_ns))) if self.running else self.now_tick()

    def _clock_message(self, t_ns: int, status: int, msg: list[int]) -> None:
        if not self.external:
            if status != 0xF8 and status != 0xFA:
                return
            log.info("external MIDI clock detected: following it")
            self.all_off()
            self.external = True
        ev = self.follower.feed(t_ns, status, msg[1:])
        if ev == ClockEvent.TICK:
            if len(self.queue):
                self.queue.retime(self.deadline)
        elif ev == ClockEvent.START:
            self.on_start()
        elif ev == ClockEvent.STOP:
            self.on_stop("Stop")
        elif ev == ClockEvent.CONTINUE:
            self.conductor.reset()
            self.improviser.cursor = min(self.improviser.cursor, self.now_tick())  # after a jump back
        elif ev == ClockEvent.POSITION:  # the song moved: what was scheduled belongs to the old position
            self.all_off()
            self.conductor.reset()
            self.release_player()
            self.improviser.cursor = min(self.improviser.cursor, self.now_tick())

    def _note(self, t_ns: int, ch: int, pitch: int, velocity: int) -> None:
        tick = self._tick_at(t_ns)
        if self.cfg.midi.passthrough:
            self.send([(0x90 if velocity else 0x80) | ch, pitch, velocity])
            self.tracker.note_on(ch, pitch) if velocity else self.tracker.note_off(ch, pitch)
            self.quiet = self.quiet and not velocity
        if velocity:
            if self.running:
                self.swing.hear(self.clock.tick_at(t_ns))
            self.stats.notes_in += 1
            self.player.on(pitch, tick, velocity, ch)
            if self.conductor.player_on(tick, len(self.player.sounding)):
                self.interrupt()
        else:
            self._player_off(pitch, tick)

    def _player_off(self, pitch: int, tick: int) -> None:
        if pitch not in self.player.sounding:
            return
        self.player.off(pitch, tick)
        self.conductor.player_off(tick, len(self.player.sounding))
        ready = self.player.ready()
        if ready:
            self.improviser.hear(ready)
            if self.recorder:
                self.recorder.add("player", ready)

    def input_lost(self) -> None:
        """The player's port went away (midi.connect_in): the notes it held end now, so respond and trade
        answer them instead of waiting for note-offs that cannot come, and every echoed note is let go."""
        self.all_off(everything=True)
        self.release_player()
        self.backing.clear()

    def release_player(self, channel: int | None = None, since: int | None = None) -> list[int]:
        """End the player's held notes (on `channel`; struck before tick `since`) as if their note-offs
        came now: a note-off that cannot come (lost input, All Notes Off, Start, Song Position, a note held
        past midi.max_held_beats) must not keep respond waiting, nor the model deaf, for ever."""
        tick = self.now_tick()
        pitches = self.player.held(channel, since)
        for pitch in pitches:
            self._player_off(pitch, tick)
        return pitches

    def _expire_held(self) -> None:
        since = self.now_tick() - round(self.cfg.midi.max_held_beats * TICKS_PER_BEAT)
        for pitch in self.release_player(since=since):
            log.info("the player's note %d was held over %g beats: taken as released (a lost note-off?)",
                     pitch, self.cfg.midi.max_held_beats)

    def _control(self, ch: int, cc: int, value: int) -> None:
        c = self.cfg.control
        if cc in (120, 123):  # the player's panic: echoed notes too; the player's own notes have ended
            self.interrupt(everything=True)
            self.backing.clear()
            if self.cfg.midi.in_channel in (0, ch + 1):
                self.release_player(channel=ch)
        if c.channel not in (0, ch + 1):
            return
        if cc < 120 and (self.learn is not None or (cc == c.learn_cc and value > 0)):  # (not channel mode)
            if self._learning(cc, value):
                return
        if cc == c.temperature_cc:
            self.sampler.set_temperature(0.2 + 1.8 * value / 127)
        elif cc == c.mode_cc:
            self.set_mode(MODES[min(value * 3 // 128, 2)])
        elif cc == c.enable_cc:
            self.enabled = value >= 64
            if not self.enabled:
                self.interrupt()
        elif cc == c.panic_cc and value > 0:
            self.interrupt(everything=True)
            self.backing.clear()
        elif cc == c.meter_cc:
            self.set_meter(parse_meter(CC_METERS[value * len(CC_METERS) // 128]))
        elif cc == c.echo_cc:
            self.improviser.echo = echo_weight(value)
        elif cc == c.expression_cc:
            self.bender.set_depth(value)

    # --- transport ----------------------------------------------------------------------------------------
    def on_start(self) -> None:
        self.all_off()
        self.conductor.reset()
        self.release_player()
        self.improviser.reprime(cursor=0)
        self._count_in()
        if self.recorder:
            self.settle(wait=True)
            self.recorder.begin(self.clock.bpm, self.take_state(), self.now_ns())

    def on_stop(self, why: str) -> None:
        log.info("stopping (%s): all notes off", why)
        self.stats.stops += 1
        self.all_off()
        self.conductor.reset()
        self.backing.clear()
        self.end_take()

    def _count_in(self) -> None:
        """From the top (Start): the count-in's clicks, and leadline silent until they end."""
        self.count_in.start()
        self.conductor.origin = self.count_in.ticks

    def set_meter(self, meter: Meter) -> None:
        """A new meter (control.meter_cc): bars count from the song's start in it; what plays stops."""
        if meter != self.meter:
            log.info("meter: %s", meter)
            self.all_off()
            self.meter = self.count_in.meter = meter
            self.conductor.set_meter(meter)
            self.swing.set_meter(meter)
            self.improviser.bar = meter.bar

    def set_mode(self, mode: str) -> None:
        if mode != self.conductor.mode:
            log.info("mode: %s", mode)
            self.all_off()
            self.conductor.set_mode(mode)
            self.improviser.reprime()

    def interrupt(self, everything: bool = False) -> None:
        """The player plays again (or panic): drop what is scheduled and silence leadline now."""
        self.stats.interrupts += 1
        self.all_off(everything)

    def _release_notes(self, everything: bool) -> None:
        tr = self.tracker
        if not self.quiet:  # else nothing was sent on the output channel since its last All Notes Off:
            for msg in tr.all_off_messages(self.out_ch):  # another one only floods the port (a Start/Stop
                self.send(msg)  # storm sent thousands; JACK drops what a cycle cannot hold, note-offs too)
            self.quiet = True
            for msg in self.bender.reset(force=True):  # pitch bend centre, modulation 0
                self.send(msg)
        else:
            for msg in self.bender.reset():  # (a bend left with no note-on after it: one skipped as late)
                self.send(msg)
        if self.count_in.channel != self.out_ch and any(ch == self.count_in.channel for ch, _ in tr.sounding()):
            for msg in tr.all_off_messages(self.count_in.channel):  # a click sounding
                self.send(msg)
        if everything and len(tr):  # notes echoed on other channels (midi.passthrough)
            for ch in sorted({ch for ch, _ in tr.sounding()}):
                for msg in tr.all_off_messages(ch):
                    self.send(msg)

    def all_off(self, everything: bool = False) -> None:
        """Every stop path: cancel scheduled notes, note-off for each sounding note, All Notes Off.

        Leadline's own notes (its output channel); `everything` also lets go of the player's notes that
        midi.passthrough echoed on other channels: panic, a lost input, exit. (The player still holds
        those on a Stop or when it plays again; its own note-offs end them.)"""
        self.improviser.stop()
        self.count_in.stop()
        self.phrase = None
        self.queue.cancel_all()
        if self.flush_out is not None:
            self.flush_out()  # what was handed over and is not written yet: note-ons dropped
        self.clock_out = 0
        self._release_notes(everything)

    # --- one pass ---------------------------------------------------------------------------------------
    def tick(self, now_ns: int) -> None:
        """Clock upkeep, generation and sending for one pass of the loop."""
        if not self.external:
            while self.internal.poll(now_ns) == ClockEvent.TICK:
                pass
            if self.cfg.clock.send_clock:
                self._clock_out()
        elif self.follower.running and self.follower.timed_out(now_ns, self.cfg.clock.timeout_ms):
            self.follower.running = False
            self.on_stop("clock dropout")
        if self.player.sounding and self.running and self.clock.tick != self._held_checked:
            self._held_checked = self.clock.tick  # (once a tick, not every pass)
            self._expire_held()
        if self.running and self.count_in.clicks:
            self.count_in.schedule(self.queue, self.clock, self.now_tick() + HORIZON, self.lookahead_ns)
        if self.running and self.clock.tick // TICKS_PER_BEAT != self._tempo_checked:
            self._tempo_checked = self.clock.tick // TICKS_PER_BEAT  # (once a beat)
            p99 = self.step_p99_ms()
            self.tempo_guard.check(self.clock.bpm, safe_bpm(p99), p99)
        if self.running and self.enabled:
            self._generate()
        self.dispatch(self.now_ns())
        if self.learn is not None and self.learn.poll(now_ns):
            self.learn = None
        if self.recorder is not None:
            self.settle()

    def step_p99_ms(self) -> float:
        """The model step's p99: the live steps' once 64 have run, else the one timed at start-up."""
        return self.stats.step_p99_ms() if self.stats.step_i >= 64 else self.start_p99_ms

    def safe_bpm(self) -> float:
        return safe_bpm(self.step_p99_ms())

    def _clock_out(self) -> None:
        """Schedule MIDI clock for the internal clock's next ticks, sent on time like the notes."""
        self.clock_out = max(self.clock_out, self.internal.tick + 1)
        while self.clock_out <= self.internal.tick + 2:
            self.queue.push(self.deadline(self.clock_out), (0xF8,), KIND_OTHER, self.clock_out)
            self.clock_out += 1

    def _generate(self) -> None:
        now = self.now_tick()
        phrase = self.conductor.phrase(now)
        if phrase is None:
            return
        imp = self.improviser
        # a phrase ends at its end or through all_off (which forgets self.phrase), never by hearing the player
        if not imp.playing and phrase is not self.phrase:
            self.phrase = phrase
            if self.cfg.sampling.key == "auto":
                key = estimate_key(key_histogram(self.player.pc_hist, self.backing.pc_hist))
                self.sampler.set_key(*(key or (None,)))
            imp.begin(max(phrase.start, now + 1), phrase.end, phrase.fill)
        imp.catch_up(now + 1)
        budget = 8
        while imp.playing and imp.ahead() <= now + HORIZON and budget:
            t0 = time.perf_counter_ns()
            steps = imp.steps
            note = imp.next_note(max_steps=4)
            if imp.steps > steps:
                per_step = (time.perf_counter_ns() - t0) // (imp.steps - steps)
                self.stats.step_time(per_step)
                if self.recorder is not None:  # (logged in the timebase of everything else)
                    self.recorder.step(self.now_ns(), per_step, imp.engine.harmony_code)
            budget -= 1
            if note is not None:
                self.schedule(note)

    def schedule(self, note: Note) -> None:
        """Put `note` on the output's schedule (no longer than midi.max_note_beats); the take records it
        when it leaves."""
        vel = min(127, max(1, round(note.velocity * self.cfg.sampling.velocity_scale)))
        onset, end = self.swing.note(note.onset, note.end)  # off-beats where the player puts them
        end = min(end, onset + self.max_note) if self.max_note else end
        self.queue.push_note(self.clock, self.out_ch, note.pitch, vel, onset, end, self.lookahead_ns,
                             self.bender.next_id(), self.bender.curve(note, onset, end))

    def deadline(self, tick: int) -> int:
        return deadline(self.clock, tick, self.lookahead_ns)

    def dispatch(self, now_ns: int) -> None:
        """Send every message whose deadline has come (waiting out the last ~1 ms); skip late note-ons.

        With a frame-accurate output (`send_at`), what is due within HANDOFF_NS is handed over with its
        time instead, and JACK writes it at that frame."""
        q, tr = self.queue, self.tracker
        timed = self.send_at is not None
        window = HANDOFF_NS if timed else WAKE_NS
        while True:
            head = q.peek()
            if head is None or head.deadline_ns > now_ns + window:
                return
            if not timed:
                now_ns = sleep_until(head.deadline_ns)
            item = q.pop()
            msg, at = item.msg, item.deadline_ns
            if item.kind == KIND_NOTE_ON or item.kind == KIND_CLICK:  # (a click is sent however late)
                if item.kind == KIND_NOTE_ON and now_ns - at > LATE_NS:
                    q.late += 1
                    log.debug("late note: tick %d (now tick %d), %.1f ms late", item.tick, self.clock.tick,
                              (now_ns - at) / 1e6)
                    continue
                if item.note and (bend := self.bender.note_on(item.note)) is not None:
                    self._emit(at, bend)  # a plain note on a bent channel: the centre first
                for off in tr.note_on(msg[0] & 0x0F, msg[1]):
                    self._emit(at, off)
                self.stats.notes_out += 1
                self.quiet = False
                self._emit(at, msg)
            elif item.kind == KIND_NOTE_OFF:
                if tr.note_off(msg[0] & 0x0F, msg[1]):
                    self._emit(at, msg)
            elif item.kind == KIND_PREBEND:  # (skipped when late: its note-on, due with it, is too)
                if now_ns - at <= LATE_NS and (bend := self.bender.prebend(item.note, msg)) is not None:
                    self._emit(at, bend)
            elif item.kind == KIND_BEND:
                if (bend := self.bender.bend(item.note, msg)) is not None:
                    self._emit(at, bend)
            else:
                self._emit(at, msg)

    def _emit(self, at: int, msg) -> None:
        if self.send_at is not None:
            self.send_at(at, msg)
            self.echo.sent(at, msg)
        else:
            self._send(msg)
            self._handed(at, msg)

    def next_wake(self, now_ns: int) -> int:
        """When the loop must be awake next: the next send, the next internal tick, or 5 ms."""
        wake = now_ns + 5_000_000
        head = self.queue.peek()
        if head is not None:
            wake = min(wake, head.deadline_ns - (HANDOFF_NS // 2 if self.send_at is not None else 0))
        return wake
