'use strict'
/*
 * Scenario (e): connect with a short client PING interval and wait until the
 * library's connection-lost handler fires (for instance because the server answered
 * a PING with an error after it forgot or replaced this client), then report its
 * error text and exit 0.
 *
 *   node ping.js --url U --cluster C --client ID [--ping-interval-ms 1000]
 *                [--ping-max-out 120] [--timeout-ms 60000]
 *
 * --ping-interval-ms is rounded up to whole seconds by the library (protocol unit);
 * the default --ping-max-out is high so that a few unanswered PINGs (e.g. while the
 * server restarts) do not end the connection with "stan: connection lost due to
 * PING failure" before the server can answer with its error.
 * Events: connected, connection_lost {message}, closed {unexpected: true},
 * summary {message}, done. Exit 1 if the connection ends any other way.
 */
const lib = require('./lib')

lib.run(async (c) => {
  let lost
  const lostPromise = new Promise((resolve) => { lost = resolve })
  const sc = await lib.connect(c, {}, { allowClose: true })
  sc.on('connection_lost', (e) => lost(lib.errText(e)))
  sc.on('close', () => {
    // 'close' right after 'connection_lost' is expected; anything else is a failure
    setImmediate(() => lib.fail('connection closed without a connection_lost event'))
  })
  lib.setStage('connected, waiting for the connection-lost handler')
  const message = await lostPromise
  lib.emit('summary', { message })
}, { timeoutMs: 60000, pingIntervalMs: 1000, pingMaxOut: 120 })
