'use strict'
/*
 * Scenario (d): manual-ack subscriber with a short ack wait that does NOT ack the
 * first delivery of a message; it waits for the server to redeliver the same
 * sequence (redelivered=true, redeliveryCount >= 1), acks that, and closes.
 *
 *   node redelivery.js --url U --cluster C --client ID --channel CH
 *                      [--ack-wait-ms 1000] [--data redeliver-me] [--no-publish]
 *                      [--timeout-ms 30000]
 *
 * Unless --no-publish, the script publishes one message (--data) itself after the
 * subscription is ready (start position: new only); with --no-publish it subscribes
 * with deliver-all and uses the first stored message.
 * Events: connected, ready, published, received {member:"sub", seq, data,
 * redelivered, redeliveryCount, acked}, closed,
 * summary {first: {...}, redelivery: {...}, elapsedMs}, done.
 */
const lib = require('./lib')

lib.run(async (c) => {
  const channel = lib.str('channel', 'interop')
  const ackWait = lib.ackWaitMs(lib.int('ack-wait-ms', 1000))
  const data = lib.str('data', 'redeliver-me')
  const noPublish = lib.bool('no-publish')

  const sc = await lib.connect(c)
  const opts = sc.subscriptionOptions()
    .setManualAckMode(true)
    .setAckWait(ackWait)
    .setMaxInFlight(1)
  if (noPublish) opts.setDeliverAllAvailable()

  let first = null
  let firstAt = 0
  let finish
  const redelivered = new Promise((resolve) => { finish = resolve })

  lib.setStage(`subscribing on ${channel}`)
  await lib.subscribe(sc, channel, null, opts, 'sub', (msg) => {
    const seq = msg.getSequence()
    if (first === null) {
      first = lib.received('sub', msg, false) // deliberately not acked
      firstAt = Date.now()
      lib.setStage(`waiting for the redelivery of seq ${seq} (ack wait ${ackWait}ms)`)
      return
    }
    if (seq === first.seq && msg.isRedelivered()) {
      msg.ack()
      const again = lib.received('sub', msg, true)
      finish({ first, redelivery: again, elapsedMs: Date.now() - firstAt })
      return
    }
    lib.received('sub', msg, false)
  })
  if (!noPublish) {
    lib.setStage(`publishing ${data} to ${channel}`)
    const guid = await lib.publish(sc, channel, data)
    lib.emit('published', { n: 1, guid, data })
    lib.setStage(`waiting for the first delivery of ${data}`)
  }
  const summary = await redelivered
  await lib.close(sc)
  lib.emit('summary', summary)
})
