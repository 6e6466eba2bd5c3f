'use strict'
/*
 * Shared plumbing for the interop scenario scripts.
 *
 * Output: one JSON object per line on stdout, always with an "event" key:
 *   connected       {client, cluster, connId}
 *   published       {n, guid, data}
 *   ready           {member, channel, ackInbox}            subscription accepted
 *   received        {member, seq, data, redelivered, redeliveryCount, acked}
 *   error           {message, code, fatal, source}
 *   connection_lost {message}
 *   closed          {error}                                 error is null on success
 *   summary         {...}                                   script specific
 *   done            {}                                      last line of a successful run
 * Exit 0 after "done"; exit 1 after a fatal "error" (including the overall timeout).
 *
 * Options are `--name value`, `--name=value` or a bare `--flag` (= true). Each may
 * instead come from the environment as STAN_<NAME> (upper case, '-' -> '_'), e.g.
 * STAN_URL, STAN_CLUSTER, STAN_CLIENT, STAN_CHANNEL.
 */
const stan = require('node-nats-streaming')

const SCRIPT = require('path').basename(process.argv[1] || 'script')

function parseArgv (argv) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) {
      fail(`unexpected argument ${JSON.stringify(a)} (options are --name value)`)
    }
    const eq = a.indexOf('=')
    if (eq > 0) {
      out[a.slice(2, eq)] = a.slice(eq + 1)
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      out[a.slice(2)] = argv[++i]
    } else {
      out[a.slice(2)] = true
    }
  }
  return out
}

const ARGV = parseArgv(process.argv.slice(2))

/** Raw option value from argv, then STAN_<NAME>, else undefined. */
function raw (name) {
  if (ARGV[name] !== undefined) return ARGV[name]
  const env = process.env['STAN_' + name.toUpperCase().replace(/-/g, '_')]
  return env === undefined || env === '' ? undefined : env
}

function str (name, def) {
  const v = raw(name)
  if (v === undefined || v === true) {
    if (def === undefined) fail(`missing required option --${name}`)
    return def
  }
  return String(v)
}

function int (name, def) {
  const v = raw(name)
  if (v === undefined || v === true) {
    if (def === undefined) fail(`missing required option --${name}`)
    return def
  }
  const n = Number(v)
  if (!Number.isInteger(n)) fail(`--${name} must be an integer, got ${JSON.stringify(v)}`)
  return n
}

function bool (name) {
  const v = raw(name)
  return v === true || v === 'true' || v === '1' || v === 'yes'
}

function emit (event, fields) {
  const obj = Object.assign({ event }, fields || {})
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** Text of whatever the library hands to an error callback (Error, NatsError or string). */
function errText (e) {
  if (e === undefined || e === null) return null
  if (typeof e === 'string') return e
  if (e.message !== undefined) return String(e.message)
  return String(e)
}

function errCode (e) {
  return e && typeof e === 'object' && e.code !== undefined ? String(e.code) : null
}

let finished = false

/** Report a fatal error as JSON (and on stderr) and exit 1. */
function fail (message, source, code) {
  if (finished) return
  finished = true
  emit('error', { message: String(message), code: code || null, fatal: true, source: source || SCRIPT })
  process.stderr.write(`${SCRIPT}: ${message}\n`)
  process.exit(1)
}

/** Successful end: "done" then exit 0. */
function done () {
  if (finished) return
  finished = true
  emit('done', {})
  process.exit(0)
}

let stage = 'starting'
/** Name the step in progress (a string, or a function giving one); timeouts name it. */
function setStage (s) {
  stage = s
}

function stageText () {
  return typeof stage === 'function' ? stage() : stage
}

/** Overall deadline for the whole script. */
function startDeadline (ms) {
  setTimeout(() => fail(`timeout after ${ms}ms while ${stageText()}`), ms)
}

process.on('uncaughtException', (e) => fail(`uncaught exception: ${e && e.stack ? e.stack : e}`))
process.on('unhandledRejection', (e) => fail(`unhandled rejection: ${errText(e)}`))
process.on('SIGTERM', () => fail('terminated by SIGTERM while ' + stageText()))

/** The options every script shares; `defaults` overrides the built-in defaults. */
function common (defaults) {
  const d = Object.assign({
    timeoutMs: 30000,
    connectTimeoutMs: 5000,
    pingIntervalMs: 5000,
    pingMaxOut: 3
  }, defaults || {})
  return {
    url: str('url', 'nats://127.0.0.1:4222'),
    cluster: str('cluster', 'test-cluster'),
    client: str('client'),
    timeoutMs: int('timeout-ms', d.timeoutMs),
    connectTimeoutMs: int('connect-timeout-ms', d.connectTimeoutMs),
    pingIntervalMs: int('ping-interval-ms', d.pingIntervalMs),
    pingMaxOut: int('ping-max-out', d.pingMaxOut),
    reconnect: bool('reconnect')
  }
}

/**
 * Connect; resolves with the Stan connection on 'connect', rejects with the first
 * 'error' before that. After connecting, 'error', 'connection_lost', 'disconnect',
 * 'reconnect' are reported as events; 'error' after connect is not fatal by itself.
 * A 'close' that close() did not ask for is reported as
 * closed {error, unexpected: true} and is fatal unless flags.allowClose.
 * The NATS connection does not reconnect unless --reconnect is given.
 */
function connect (c, extra, flags) {
  flags = flags || {}
  setStage(`connecting to ${c.url} (cluster ${c.cluster}, client ${c.client})`)
  return new Promise((resolve, reject) => {
    let connected = false
    const opts = Object.assign({
      url: c.url,
      connectTimeout: c.connectTimeoutMs,
      stanPingInterval: c.pingIntervalMs,
      stanMaxPingOut: c.pingMaxOut,
      maxReconnectAttempts: c.reconnect ? -1 : 0,
      reconnect: c.reconnect
    }, extra || {})
    const sc = stan.connect(c.cluster, c.client, opts)
    sc.on('connect', () => {
      connected = true
      emit('connected', { client: c.client, cluster: c.cluster, connId: sc.connId ? sc.connId.toString() : null })
      resolve(sc)
    })
    sc.on('error', (e) => {
      if (!connected) {
        reject(e)
        return
      }
      emit('error', { message: errText(e), code: errCode(e), fatal: false, source: 'connection' })
    })
    sc.on('connection_lost', (e) => {
      emit('connection_lost', { message: errText(e), code: errCode(e) })
    })
    sc.on('close', (e) => {
      if (sc.closingOnPurpose || finished) return
      if (!connected) {
        // closeWithError() emits 'error' first; this only matters if it did not
        reject(new Error(`connection closed before connecting: ${errText(e)}`))
        return
      }
      emit('closed', { error: errText(e), unexpected: true })
      if (!flags.allowClose) fail(`connection closed unexpectedly: ${errText(e)}`, 'connection')
    })
    sc.on('disconnect', () => emit('disconnect', {}))
    sc.on('reconnect', () => emit('reconnect', {}))
  })
}

/** Publish one message and wait for its PubAck; resolves with the guid. */
function publish (sc, channel, data) {
  return new Promise((resolve, reject) => {
    sc.publish(channel, data, (err, guid) => {
      if (err) reject(new Error(`publish to ${channel} failed: ${errText(err)}`))
      else resolve(guid)
    })
  })
}

/**
 * Subscribe and wait for 'ready'. `onMessage` is attached before the request is sent:
 * the first deliveries can be parsed in the same read as the subscription reply,
 * before an awaiting caller would get to attach a handler. A subscription 'error' or
 * 'timeout' after 'ready' is fatal.
 */
function subscribe (sc, channel, qGroup, opts, member, onMessage) {
  return new Promise((resolve, reject) => {
    const sub = qGroup ? sc.subscribe(channel, qGroup, opts) : sc.subscribe(channel, opts)
    sub.on('message', onMessage)
    let ready = false
    sub.on('ready', () => {
      ready = true
      emit('ready', { member, channel, qGroup: qGroup || null, ackInbox: sub.ackInbox })
      resolve(sub)
    })
    sub.on('error', (e) => {
      if (!ready) reject(new Error(`subscribe ${member} on ${channel} failed: ${errText(e)}`))
      else fail(`subscription ${member} error: ${errText(e)}`, 'subscription')
    })
    sub.on('timeout', (e) => {
      if (!ready) reject(new Error(`subscribe ${member} on ${channel} timed out: ${errText(e)}`))
      else fail(`subscription ${member} timeout: ${errText(e)}`, 'subscription')
    })
  })
}

/** Close the connection (CloseRequest) and wait for the reply; a close error is fatal. */
function close (sc) {
  setStage('closing the connection')
  sc.closingOnPurpose = true
  return new Promise((resolve, reject) => {
    sc.once('close', (e) => {
      emit('closed', { error: errText(e) })
      if (e) reject(new Error(`close failed: ${errText(e)}`))
      else resolve()
    })
    sc.close()
  })
}

/** Subscription options with ack wait in ms (the protocol carries whole seconds). */
function ackWaitMs (ms) {
  if (ms % 1000 !== 0 || ms < 1000) fail(`--ack-wait-ms must be a multiple of 1000, got ${ms}`)
  return ms
}

/** Report a received message; returns the plain object. */
function received (member, msg, acked) {
  const r = {
    member,
    seq: msg.getSequence(),
    data: msg.getData(),
    redelivered: msg.isRedelivered(),
    redeliveryCount: msg.getRedeliveryCount(),
    acked
  }
  emit('received', r)
  return r
}

/** Run main(common options); any rejection is a fatal error with its text. */
function run (main, defaults) {
  const c = common(defaults)
  startDeadline(c.timeoutMs)
  main(c).then(done, (e) => fail(errText(e), 'main', errCode(e)))
}

module.exports = {
  stan,
  str,
  int,
  bool,
  emit,
  errText,
  fail,
  done,
  setStage,
  connect,
  publish,
  subscribe,
  close,
  ackWaitMs,
  received,
  run
}
