// sse.js — Server-Sent Events over fetch (so the Bearer token goes along): a pure parser and a reconnecting reader.

import { authHeaders, errorFrom } from './api.js';

/**
 * Incremental text/event-stream parser. feed() takes decoded text chunks of any size and returns
 * the complete messages `{event, id, data}` they finish; comments (`:` lines) are dropped.
 */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.reset();
    this.lastEventId = '';
  }

  reset() {
    this.event = '';
    this.data = [];
    this.hasData = false;
  }

  feed(chunk) {
    this.buffer += chunk;
    const out = [];
    // Lines end with \n, \r\n or \r; keep a trailing \r back in case \n follows in the next chunk.
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== '\n' && c !== '\r') continue;
      if (c === '\r' && i === this.buffer.length - 1) break;
      const line = this.buffer.slice(start, i);
      if (c === '\r' && this.buffer[i + 1] === '\n') i++;
      start = i + 1;
      const msg = this.line(line);
      if (msg) out.push(msg);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  line(line) {
    if (line === '') {
      if (!this.hasData) { this.reset(); return null; }
      const msg = { event: this.event || 'message', id: this.lastEventId, data: this.data.join('\n') };
      this.reset();
      return msg;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') { this.data.push(value); this.hasData = true; }
    else if (field === 'id' && !value.includes('\0')) this.lastEventId = value;
    return null;
  }
}

/**
 * Reads an SSE URL until stop() is called, reconnecting `retryMs` after an error.
 * handlers: onMessage(msg), onState(text), onError(text, fatal). A 401/403/429/503 at connect is
 * reported through onError; 401/403 stop the stream (reconnecting cannot help), the rest retry.
 */
export function openStream(url, handlers, retryMs = 2000) {
  const { onMessage, onState = () => {}, onError = () => {} } = handlers;
  let controller = null;
  let stopped = false;
  let timer = null;

  const schedule = (delay = retryMs) => {
    if (stopped) return;
    onState(`reconnecting in ${Math.round(delay / 1000)} s…`);
    timer = setTimeout(connect, delay);
  };

  async function connect() {
    if (stopped) return;
    controller = new AbortController();
    onState('connecting…');
    try {
      const res = await fetch(url, {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        signal: controller.signal,
        cache: 'no-store',
      });
      if (!res.ok) {
        const err = await errorFrom(res);
        const fatal = err.status === 401 || err.status === 403 || err.status === 400;
        onError(err, fatal);
        if (fatal) { stopped = true; onState('stopped'); return; }
        schedule(Math.max(retryMs, (err.retryAfter || 0) * 1000)); // 429/503: the subscriber limit
        return;
      }
      onState('streaming');
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const msg of parser.feed(decoder.decode(value, { stream: true }))) onMessage(msg);
      }
      schedule(); // the server closed the stream
    } catch (err) {
      if (stopped || err.name === 'AbortError') return;
      onError(err, false);
      schedule();
    }
  }

  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (controller) controller.abort();
    },
  };
}
