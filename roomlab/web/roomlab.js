// roomlab.js: a dependency-free browser client for a roomlab server (ES module, no build step).
//
//   import { connect } from '/web/roomlab.js';
//   const room = await connect('http://127.0.0.1:8000', token, { name: 'standup' });
//   room.on('trackMessage', (data, track, participant, { seq, sentMs }) => ...);
//   const track = await room.localParticipant.publishDataTrack('cursor', { ordered: false, maxRetransmits: 0 });
//   track.send('{"x": 10}');
//   room.localParticipant.publishData('hi', { topic: 'chat' });
//
// It mirrors roomlab's Python client (roomlab/client/room.py): JSON signaling over a WebSocket at
// /signaling (roomlab/protocol/signaling.py), one RTCPeerConnection with the server, which makes
// every offer (the browser only answers), and the binary framing of roomlab/protocol/framing.py
// on every data message. Data tracks and publish_data only: media m-lines in the server's offers
// are answered by the browser's defaults and otherwise ignored.

export const PROTOCOL_VERSION = 1;
const RELIABLE_CHANNEL = '_reliable';
const LOSSY_CHANNEL = '_lossy';
const TRACK_CHANNEL_PROTOCOL = 'roomlab-track';
const CONNECT_TIMEOUT_MS = 20000;
const PUBLISH_TIMEOUT_MS = 15000;
const GATHER_TIMEOUT_MS = 5000;
// A reliable channel refuses new messages beyond this backlog, as the Python client does.
const RELIABLE_BUFFER_BOUND = 4 * 1024 * 1024;
const UNRELIABLE_BUFFER_BOUND = 64 * 1024;

// Framing (SPEC §6) ------------------------------------------------------------------------------
// flags (u8) | seq (u32) | send time, µs since the UNIX epoch (i64) | payload length (u32), big-endian,
// then [topic: u16 length + UTF-8] [sender: 34 ASCII] [destinations: u8 count, (u8 len, UTF-8, u32 seq)*],
// then the payload. One data-channel message may hold several frames back to back.
export const TEXT = 0x01;
export const HAS_TOPIC = 0x02;
export const HAS_SENDER = 0x04;
export const HAS_DESTINATIONS = 0x08;
export const DIRECT = 0x10;
export const HEADER_SIZE = 17;
const SID_LENGTH = 34;
const MAX_TOPIC_BYTES = 1024;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export class FramingError extends Error {}

export class RoomError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** Microseconds since the UNIX epoch, as a BigInt (sub-millisecond where the browser allows). */
export function nowUs() {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

function toBytes(data) {
  if (typeof data === 'string') return utf8.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`data must be a string, an ArrayBuffer or a typed array, got ${typeof data}`);
}

/** One frame as bytes. `destinations`: [[identity, seq], ...] (publish_data to named identities). */
export function encodeFrame(payload, seq, { topic = null, destinations = [], sentUs = nowUs() } = {}) {
  let flags = typeof payload === 'string' ? TEXT : 0;
  const body = toBytes(payload);
  const sections = [];
  if (topic !== null && topic !== undefined) {
    const bytes = utf8.encode(topic);
    if (bytes.length > MAX_TOPIC_BYTES) throw new RangeError(`topic must be at most ${MAX_TOPIC_BYTES} bytes`);
    const section = new Uint8Array(2 + bytes.length);
    new DataView(section.buffer).setUint16(0, bytes.length);
    section.set(bytes, 2);
    sections.push(section);
    flags |= HAS_TOPIC;
  }
  if (destinations.length) {
    if (destinations.length > 255) throw new RangeError('at most 255 destination identities per message');
    const parts = [Uint8Array.of(destinations.length)];
    for (const [identity, destinationSeq] of destinations) {
      const name = utf8.encode(identity);
      if (name.length < 1 || name.length > 255) throw new RangeError('identities must be 1 to 255 bytes of UTF-8');
      const part = new Uint8Array(1 + name.length + 4);
      part[0] = name.length;
      part.set(name, 1);
      new DataView(part.buffer).setUint32(1 + name.length, destinationSeq);
      parts.push(part);
    }
    sections.push(...parts);
    flags |= HAS_DESTINATIONS;
  }
  const sectionBytes = sections.reduce((n, s) => n + s.length, 0);
  const frame = new Uint8Array(HEADER_SIZE + sectionBytes + body.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, flags);
  view.setUint32(1, seq % 2 ** 32);
  view.setBigInt64(5, BigInt(sentUs));
  view.setUint32(13, body.length);
  let offset = HEADER_SIZE;
  for (const section of sections) {
    frame.set(section, offset);
    offset += section.length;
  }
  frame.set(body, offset);
  return frame;
}

/** Every frame in one data-channel message: [{payload, seq, sentMs, topic, sender, destinations, direct}].
 *  Text payloads come back as strings, binary ones as (copied) ArrayBuffers. */
export function decodeFrames(message) {
  if (typeof message === 'string') throw new FramingError('data messages are binary frames; got text');
  const bytes = toBytes(message);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const total = bytes.length;
  const frames = [];
  let offset = 0;
  const need = (n) => {
    if (offset + n > total) throw new FramingError(`malformed frame: ${n} bytes needed at byte ${offset}`);
  };
  while (offset < total) {
    if (total - offset < HEADER_SIZE) throw new FramingError(`truncated frame header at byte ${offset}`);
    const flags = view.getUint8(offset);
    const seq = view.getUint32(offset + 1);
    const sentUs = view.getBigInt64(offset + 5);
    const length = view.getUint32(offset + 13);
    offset += HEADER_SIZE;
    let topic = null;
    let sender = null;
    const destinations = [];
    if (flags & HAS_TOPIC) {
      need(2);
      const topicLength = view.getUint16(offset);
      need(2 + topicLength);
      topic = strictUtf8.decode(bytes.subarray(offset + 2, offset + 2 + topicLength));
      offset += 2 + topicLength;
    }
    if (flags & HAS_SENDER) {
      need(SID_LENGTH);
      sender = String.fromCharCode(...bytes.subarray(offset, offset + SID_LENGTH));
      offset += SID_LENGTH;
    }
    if (flags & HAS_DESTINATIONS) {
      need(1);
      let count = bytes[offset++];
      while (count-- > 0) {
        need(1);
        const nameLength = bytes[offset];
        need(1 + nameLength + 4);
        const identity = strictUtf8.decode(bytes.subarray(offset + 1, offset + 1 + nameLength));
        destinations.push([identity, view.getUint32(offset + 1 + nameLength)]);
        offset += 1 + nameLength + 4;
      }
    }
    if (offset + length > total) throw new FramingError(`frame payload of ${length} bytes runs past the message end`);
    const body = bytes.subarray(offset, offset + length);
    offset += length;
    let payload;
    try {
      payload = flags & TEXT ? strictUtf8.decode(body) : body.slice().buffer;
    } catch {
      throw new FramingError('text frame payload is not UTF-8');
    }
    const direct = !!(flags & DIRECT);
    frames.push({ payload, seq, sentMs: Number(sentUs) / 1000, topic, sender, destinations, direct });
  }
  return frames;
}

// Small helpers --------------------------------------------------------------------------------
function deferred() {
  let resolve, reject;
  const promise = new Promise((a, b) => ((resolve = a), (reject = b)));
  return { promise, resolve, reject };
}

function withTimeout(promise, ms, error) {
  let timer;
  const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(error), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The server's signaling WebSocket address, from its http(s):// or ws(s):// URL. */
export function signalingUrl(url) {
  const parsed = new URL(url);
  const scheme = { 'http:': 'ws:', 'https:': 'wss:', 'ws:': 'ws:', 'wss:': 'wss:' }[parsed.protocol];
  if (!scheme) throw new TypeError(`url must be the server's http(s):// or ws(s):// address, got ${url}`);
  return `${scheme}//${parsed.host}/signaling`;
}

/** Keep only the ICE candidates whose address is in `allowed` (and fix `c=` lines that named another). */
export function filterCandidates(sdp, allowed) {
  if (!allowed) return sdp;
  const lines = sdp.split('\r\n');
  const kept = lines.filter((line) => !line.startsWith('a=candidate:') || allowed.includes(line.split(' ')[4]));
  const first = kept.find((line) => line.startsWith('a=candidate:'));
  const fallback = first ? first.split(' ')[4] : '0.0.0.0';
  return kept
    .map((line) => {
      const match = /^c=IN (IP4|IP6) (\S+)$/.exec(line);
      return match && !allowed.includes(match[2]) ? `c=IN ${fallback.includes(':') ? 'IP6' : 'IP4'} ${fallback}` : line;
    })
    .join('\r\n');
}

class Emitter {
  constructor() {
    this._handlers = new Map();
  }
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, []);
    this._handlers.get(event).push(fn);
    return this;
  }
  off(event, fn) {
    this._handlers.set(event, (this._handlers.get(event) || []).filter((h) => h !== fn));
    return this;
  }
  emit(event, ...args) {
    // a failing handler is reported and never breaks the client that emitted the event
    for (const fn of this._handlers.get(event) || []) {
      try {
        fn(...args);
      } catch (error) {
        console.error(`roomlab: ${event} handler failed`, error);
      }
    }
  }
}

// Tracks and participants ----------------------------------------------------------------------
export class LocalDataTrack {
  constructor(sid, name, options, channel) {
    Object.assign(this, { sid, name, kind: 'data', ...options });
    this._channel = channel;
    this._seq = 0;
    this.messagesSent = 0;
    this.bytesSent = 0;
    this.messagesDropped = 0;
  }
  get reliable() {
    return this.maxPacketLifeTime === null && this.maxRetransmits === null;
  }
  get bufferedAmount() {
    return this._channel ? this._channel.bufferedAmount : 0;
  }
  /** Send one message (string or binary) to every subscriber; returns its sequence number. */
  send(data) {
    const channel = this._channel;
    if (!channel || channel.readyState !== 'open') throw new Error(`data track ${this.name} is not published`);
    const seq = this._seq + 1;
    const frame = encodeFrame(data, seq);
    if (channel.bufferedAmount > (this.reliable ? RELIABLE_BUFFER_BOUND : UNRELIABLE_BUFFER_BOUND)) {
      if (this.reliable) throw new RoomError(53300, `data track ${this.name}: ${channel.bufferedAmount} bytes queued`);
      this.messagesDropped += 1; // an unreliable track drops, as the network would
    } else {
      channel.send(frame);
    }
    this._seq = seq;
    this.messagesSent += 1;
    this.bytesSent += frame.length;
    return seq;
  }
}

export class RemoteDataTrack extends Emitter {
  constructor(publication, participant) {
    super();
    const options = publication.options || {};
    this.sid = publication.trackSid;
    this.name = publication.trackName;
    this.kind = 'data';
    this.ordered = options.ordered ?? true;
    this.maxPacketLifeTime = options.max_packet_life_time ?? null;
    this.maxRetransmits = options.max_retransmits ?? null;
    this.participant = participant;
    this.messagesReceived = 0;
    this.bytesReceived = 0;
    this.channelMessagesReceived = 0; // data-channel messages: the server batches several frames in one
    this.messagesDropped = 0; // what the server could not deliver to this slow subscriber
    this._channel = null;
  }
  get reliable() {
    return this.maxPacketLifeTime === null && this.maxRetransmits === null;
  }
}

export class RemoteParticipant extends Emitter {
  constructor(info) {
    super();
    this.sid = info.sid;
    this.identity = info.identity;
    this.metadata = info.metadata || '';
    this.state = 'connected';
    this.tracks = new Map(); // track SID -> publication {trackSid, trackName, kind, options, isTrackEnabled, track}
  }
}

export class LocalParticipant {
  constructor(room, sid, identity) {
    this._room = room;
    this.sid = sid;
    this.identity = identity;
    this.tracks = new Map(); // track SID -> LocalDataTrack
    this._dataSeq = new Map(); // "reliable|identity" -> last publish_data seq (identity '' = everyone)
  }

  /** Publish a data track; resolves once its channel to the server is open. */
  async publishDataTrack(name, options = {}) {
    const { ordered = true, maxPacketLifeTime = null, maxRetransmits = null, priority = 'standard' } = options;
    if (maxPacketLifeTime !== null && maxRetransmits !== null) {
      throw new RangeError('set maxPacketLifeTime or maxRetransmits, not both');
    }
    const room = this._room;
    const wire = { priority, ordered, max_packet_life_time: maxPacketLifeTime, max_retransmits: maxRetransmits };
    const reply = await room._request({ type: 'publish', name, kind: 'data', options: wire });
    const sid = reply.track.sid;
    // The channel's label is the track SID: that is how the server knows which track it carries.
    const init = { ordered, protocol: TRACK_CHANNEL_PROTOCOL };
    if (maxPacketLifeTime !== null) init.maxPacketLifeTime = maxPacketLifeTime;
    if (maxRetransmits !== null) init.maxRetransmits = maxRetransmits;
    const channel = room._pc.createDataChannel(sid, init);
    channel.binaryType = 'arraybuffer';
    const opened = new Promise((resolve, reject) => {
      channel.onopen = resolve;
      channel.onclose = () => reject(new RoomError(53300, `data track ${name}: its channel closed`));
    });
    await withTimeout(opened, PUBLISH_TIMEOUT_MS, new RoomError(53300, `data track ${name}: its channel did not open`));
    channel.onopen = channel.onclose = null;
    const track = new LocalDataTrack(sid, name, { ordered, maxPacketLifeTime, maxRetransmits, priority }, channel);
    this.tracks.set(sid, track);
    return track;
  }

  unpublishTrack(track) {
    if (!this.tracks.delete(track.sid)) throw new Error(`track ${track.name} is not published`);
    this._room._send({ type: 'unpublish', sid: track.sid });
    track._channel?.close();
    track._channel = null;
  }

  setMetadata(metadata) {
    this._room._send({ type: 'set_metadata', metadata });
  }

  /** A message to everyone else in the room, or to `destinationIdentities` (LiveKit's publishData). */
  publishData(payload, { reliable = true, destinationIdentities = null, topic = null } = {}) {
    const channel = this._room._channels.get(reliable ? RELIABLE_CHANNEL : LOSSY_CHANNEL);
    if (!channel || channel.readyState !== 'open') throw new Error('the room is not connected');
    if (reliable && channel.bufferedAmount > RELIABLE_BUFFER_BOUND) {
      throw new RoomError(53300, `${channel.bufferedAmount} bytes of reliable data already queued`);
    }
    // numbered per publisher and channel, and per destination for messages to named identities,
    // so that each receiver's sequence has no gaps that are not losses
    const next = (identity) => (this._dataSeq.get(`${reliable}|${identity}`) || 0) + 1;
    const destinations = [...new Set(destinationIdentities || [])].map((identity) => [identity, next(identity)]);
    const numbered = destinations.length ? destinations : [['', next('')]];
    channel.send(encodeFrame(payload, destinations.length ? 0 : numbered[0][1], { topic, destinations }));
    for (const [identity, seq] of numbered) this._dataSeq.set(`${reliable}|${identity}`, seq);
  }
}

// The room -------------------------------------------------------------------------------------
export class Room extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.sid = '';
    this.name = '';
    this.state = 'connecting';
    this.localParticipant = null;
    this.participants = new Map(); // participant SID -> RemoteParticipant
    this._options = options;
    this._pc = new RTCPeerConnection({ iceServers: options.iceServers || [] });
    this._pc.addEventListener('datachannel', (event) => this._onDataChannel(event.channel));
    this._ws = null;
    this._chain = Promise.resolve(); // signaling messages are handled one at a time, in order
    this._refs = 0;
    this._pending = new Map(); // publish ref -> deferred reply
    this._channels = new Map(); // _reliable / _lossy
    this._pendingTrackChannels = new Map(); // track SID -> {channel, early: [messages]}
    this._connected = deferred();
    this._negotiated = deferred();
    this._channelsOpen = deferred();
    this._serverCandidates = []; // a=candidate lines of the server's last offer
    this._held = []; // events raised while connecting, emitted once connect() has returned
    this._connected.promise.catch(() => {}); // a refusal is reported by connect(), not as unhandled
  }

  emit(event, ...args) {
    if (this.state === 'connecting') this._held.push([event, args]);
    else super.emit(event, ...args);
  }

  async _connect(token, { name = null, automaticSubscription = true, metadata = '' }) {
    const failed = new RoomError(53000, `Signaling connection error: cannot reach ${this.url}`);
    this._ws = new WebSocket(signalingUrl(this.url));
    this._ws.addEventListener('message', (event) => this._onSignal(event.data));
    this._ws.addEventListener('close', () => this._onSocketClosed());
    await withTimeout(
      new Promise((resolve, reject) => {
        this._ws.addEventListener('open', resolve, { once: true });
        this._ws.addEventListener('error', () => reject(failed), { once: true });
      }),
      CONNECT_TIMEOUT_MS,
      failed,
    );
    const options = { automatic_subscription: automaticSubscription, metadata };
    this._send({ type: 'connect', version: PROTOCOL_VERSION, token, room: name, ...options });
    const timeout = new RoomError(53000, 'Signaling connection error: the server did not finish connecting');
    const ready = Promise.all([this._connected.promise, this._negotiated.promise, this._channelsOpen.promise]);
    await withTimeout(ready, CONNECT_TIMEOUT_MS, timeout);
    this.state = 'connected';
    // Events of the connection's first moments (tracks already in the room) reach handlers that
    // the caller attaches right after `await connect(...)`.
    const held = this._held.splice(0);
    setTimeout(() => held.forEach(([event, args]) => this.emit(event, ...args)), 0);
  }

  _send(message) {
    if (this._ws?.readyState !== WebSocket.OPEN) throw new RoomError(53001, 'Signaling connection disconnected');
    this._ws.send(JSON.stringify(message));
  }

  _request(message) {
    const ref = ++this._refs;
    const reply = deferred();
    this._pending.set(ref, reply);
    this._send({ ...message, ref });
    const timeout = new RoomError(53300, `no reply to ${message.type} within ${PUBLISH_TIMEOUT_MS} ms`);
    return withTimeout(reply.promise, PUBLISH_TIMEOUT_MS, timeout).finally(() => this._pending.delete(ref));
  }

  _onSignal(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    this._chain = this._chain
      .then(() => this._handle(message))
      .catch((error) => {
        if (this.state !== 'disconnected') console.error(`roomlab: failed to handle ${message.type}`, error);
      });
  }

  async _handle(message) {
    const participant = this.participants.get(message.participant_sid);
    const found = message.track_sid ? this._findPublication(message.track_sid) : null;
    switch (message.type) {
      case 'connected':
        this.sid = message.room.sid;
        this.name = message.room.name;
        this.localParticipant = new LocalParticipant(this, message.participant.sid, message.participant.identity);
        for (const info of message.participants) this._addParticipant(info);
        this._connected.resolve();
        break;
      case 'offer':
        await this._onOffer(message.sdp);
        break;
      case 'published':
        this._pending.get(message.ref)?.resolve(message);
        break;
      case 'error': {
        const error = new RoomError(message.code, message.message);
        if (this._pending.has(message.ref)) this._pending.get(message.ref).reject(error);
        else if (!this.localParticipant) this._connected.reject(error); // refused at connect
        else this.emit('error', error);
        break;
      }
      case 'participant_connected':
        this.emit('participantConnected', this._addParticipant(message.participant));
        break;
      case 'participant_disconnected':
        if (!participant) break;
        this.participants.delete(participant.sid);
        for (const publication of participant.tracks.values()) this._unsubscribe(participant, publication);
        participant.state = 'disconnected';
        participant.emit('disconnected', participant);
        this.emit('participantDisconnected', participant);
        break;
      case 'track_published':
        if (participant) {
          const publication = this._addPublication(participant, message.track);
          participant.emit('trackPublished', publication);
          this.emit('trackPublished', publication, participant);
        }
        break;
      case 'track_unpublished':
        if (found) {
          found.participant.tracks.delete(message.track_sid);
          this._unsubscribe(found.participant, found.publication);
          found.participant.emit('trackUnpublished', found.publication);
          this.emit('trackUnpublished', found.publication, found.participant);
        }
        break;
      case 'unsubscribed':
        if (found) this._unsubscribe(found.participant, found.publication);
        break;
      case 'track_enabled':
      case 'track_disabled': {
        if (!found) break;
        found.publication.isTrackEnabled = message.type === 'track_enabled';
        const event = found.publication.isTrackEnabled ? 'trackEnabled' : 'trackDisabled';
        found.participant.emit(event, found.publication);
        this.emit(event, found.publication, found.participant);
        break;
      }
      case 'data_dropped': // the server dropped messages of this track for us, a slow subscriber
        if (found?.publication.track) {
          found.publication.track.messagesDropped += message.messages;
          found.publication.track.emit('dropped', message.messages);
        }
        break;
      case 'metadata_changed':
        if (participant) {
          participant.metadata = message.metadata;
          participant.emit('metadataChanged', participant);
          this.emit('participantMetadataChanged', participant);
        }
        break;
      case 'disconnected':
        this._close(message.code ? new RoomError(message.code, message.message || '') : null);
        break;
      default: // pong, and anything newer than this client
        break;
    }
  }

  /** Answer the server's offer. The server takes no trickled candidates, so the answer goes once
   *  gathering is complete, holding every candidate (those outside `candidateAddresses` removed). */
  async _onOffer(sdp) {
    const pc = this._pc;
    // The server answers connectivity checks from its own host addresses only (127.0.0.1 by
    // default), so checks the browser sends from other interfaces fail and are never nominated.
    this._serverCandidates = sdp.split('\r\n').filter((line) => line.startsWith('a=candidate:'));
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    if (pc.iceGatheringState !== 'complete') {
      const gathered = new Promise((resolve) => {
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      });
      await withTimeout(gathered, GATHER_TIMEOUT_MS, null).catch(() => {}); // send what there is
    }
    const answer = filterCandidates(pc.localDescription.sdp, this._options.candidateAddresses);
    this._lastAnswer = answer;
    this._send({ type: 'answer', sdp: answer });
    this._negotiated.resolve();
  }

  _addParticipant(info) {
    const participant = new RemoteParticipant(info);
    this.participants.set(participant.sid, participant);
    for (const track of info.tracks || []) this._addPublication(participant, track);
    return participant;
  }

  _addPublication(participant, info) {
    const publication = {
      trackSid: info.sid,
      trackName: info.name,
      kind: info.kind,
      options: info.options || {},
      isTrackEnabled: info.enabled ?? true,
      track: null,
    };
    participant.tracks.set(publication.trackSid, publication);
    // a subscription's channel can arrive before the track_published that names it
    const pending = this._pendingTrackChannels.get(publication.trackSid);
    if (pending) {
      this._pendingTrackChannels.delete(publication.trackSid);
      this._subscribeData(participant, publication, pending.channel, pending.early);
    }
    return publication;
  }

  _findPublication(trackSid) {
    for (const participant of this.participants.values()) {
      const publication = participant.tracks.get(trackSid);
      if (publication) return { participant, publication };
    }
    return null;
  }

  _onDataChannel(channel) {
    channel.binaryType = 'arraybuffer';
    if (channel.label === RELIABLE_CHANNEL || channel.label === LOSSY_CHANNEL) {
      this._channels.set(channel.label, channel);
      channel.addEventListener('message', (event) => this._onDataPacket(channel, event.data));
      const check = () => {
        const open = (label) => this._channels.get(label)?.readyState === 'open';
        if (open(RELIABLE_CHANNEL) && open(LOSSY_CHANNEL)) this._channelsOpen.resolve();
      };
      channel.addEventListener('open', check);
      check();
      return;
    }
    if (channel.protocol !== TRACK_CHANNEL_PROTOCOL) return;
    const found = this._findPublication(channel.label);
    if (found) {
      this._subscribeData(found.participant, found.publication, channel, []);
    } else {
      // its track_published is on the way: keep what arrives meanwhile
      const early = [];
      channel.onmessage = (event) => early.push(event.data);
      this._pendingTrackChannels.set(channel.label, { channel, early });
    }
  }

  _subscribeData(participant, publication, channel, early) {
    const track = new RemoteDataTrack(publication, participant);
    track._channel = channel;
    const onMessage = (data) => {
      track.channelMessagesReceived += 1;
      let frames;
      try {
        frames = decodeFrames(data);
      } catch (error) {
        console.warn(`roomlab: track ${track.name}: undecodable message: ${error.message}`);
        return;
      }
      for (const frame of frames) {
        const info = { seq: frame.seq, sentMs: frame.sentMs };
        track.messagesReceived += 1;
        track.bytesReceived += toBytes(frame.payload).byteLength;
        track.emit('message', frame.payload, info);
        participant.emit('trackMessage', frame.payload, track, info);
        this.emit('trackMessage', frame.payload, track, participant, info);
      }
    };
    channel.onmessage = (event) => onMessage(event.data);
    channel.addEventListener('close', () => this._unsubscribe(participant, publication, track));
    publication.track = track;
    participant.emit('trackSubscribed', track, publication);
    this.emit('trackSubscribed', track, publication, participant);
    for (const data of early) onMessage(data);
  }

  _unsubscribe(participant, publication, only = null) {
    const track = publication.track;
    if (!track || (only && track !== only)) return;
    publication.track = null;
    if (track._channel && track._channel.readyState !== 'closed') track._channel.close();
    participant.emit('trackUnsubscribed', track, publication);
    this.emit('trackUnsubscribed', track, publication, participant);
  }

  /** publish_data from others (or from the server itself: participant null). */
  _onDataPacket(channel, data) {
    let frames;
    try {
      frames = decodeFrames(data);
    } catch (error) {
      console.warn(`roomlab: undecodable data packet: ${error.message}`);
      return;
    }
    for (const frame of frames) {
      const participant = (frame.sender && this.participants.get(frame.sender)) || null;
      const reliable = channel.label === RELIABLE_CHANNEL;
      const info = { seq: frame.seq, sentMs: frame.sentMs, direct: frame.direct, reliable };
      participant?.emit('dataReceived', frame.payload, frame.topic, info);
      this.emit('dataReceived', frame.payload, participant, frame.topic, info);
    }
  }

  getStats() {
    return this._pc.getStats();
  }

  /** The ICE candidate pair in use, {local, remote}, each {address, port, protocol, candidateType}, or null.
   *  Browsers redact the address of a peer-reflexive remote candidate; `offeredAddress` is the
   *  address of the candidate the server offered on that port. */
  async getSelectedCandidatePair() {
    const stats = await this._pc.getStats();
    for (const report of stats.values()) {
      if (report.type === 'transport' && report.selectedCandidatePairId) {
        const pair = stats.get(report.selectedCandidatePairId);
        const describe = ({ address, port, protocol, candidateType }) => ({ address, port, protocol, candidateType });
        const remote = describe(stats.get(pair.remoteCandidateId));
        const offered = this._serverCandidates.map((line) => line.split(' ')).find((f) => Number(f[5]) === remote.port);
        remote.offeredAddress = offered ? offered[4] : null;
        return { local: describe(stats.get(pair.localCandidateId)), remote };
      }
    }
    return null;
  }

  /** Leave the room. */
  disconnect() {
    if (this.state === 'disconnected') return;
    try {
      this._send({ type: 'leave' });
    } catch {
      // the socket is already gone
    }
    this._close(null);
  }

  _onSocketClosed() {
    if (this.state === 'disconnected') return;
    const error = new RoomError(53001, 'Signaling connection disconnected');
    this._connected.reject(error);
    this._close(error);
  }

  _close(error) {
    if (this.state === 'disconnected') return;
    const wasConnecting = this.state === 'connecting';
    this.state = 'disconnected';
    for (const reply of this._pending.values()) reply.reject(new RoomError(53001, 'Signaling connection disconnected'));
    this._pending.clear();
    if (this._ws && this._ws.readyState <= WebSocket.OPEN) this._ws.close();
    this._pc.close();
    if (wasConnecting) this._connected.reject(error || new RoomError(53001, 'Signaling connection disconnected'));
    else super.emit('disconnected', error);
  }
}

/** Join a room: resolves with a connected Room once the server's channels are open.
 *  options: name (the room), automaticSubscription (default true), metadata, iceServers (default
 *  none), candidateAddresses (send only ICE candidates on these addresses, e.g. ['127.0.0.1']). */
export async function connect(url, token, options = {}) {
  const room = new Room(url, options);
  try {
    await room._connect(token, options);
  } catch (error) {
    room._close(error);
    throw error;
  }
  return room;
}
