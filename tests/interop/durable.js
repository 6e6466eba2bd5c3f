'use strict'
/*
 * Scenario (b): durable subscriber with manual acks. Acks the first --count distinct
 * sequences it receives, then closes the connection (the durable survives). Anything
 * received after that is reported with acked=false and left unacked. Run it again
 * with the same --client and --durable to resume.
 *
 *   node durable.js --url U --cluster C --client ID --channel CH --durable NAME
 *                   --count K [--deliver-all] [--ack-wait-ms 30000] [--max-inflight N]
 *                   [--close-sub] [--timeout-ms 30000]
 *
 * --deliver-all   start position First (only matters when the durable is new)
 * --close-sub     close the subscription (subclose request) before the connection
 * Events: connected, ready, received {member:"durable", seq, data, redelivered,
 * redeliveryCount, acked}, [sub_closed], closed, summary {acked: [seq...],
 * received: n}, done.
 */
const lib = require('./lib')

lib.run(async (c) => {
  const channel = lib.str('channel', 'interop')
  const durable = lib.str('durable')
  const count = lib.int('count')
  const ackWait = lib.ackWaitMs(lib.int('ack-wait-ms', 30000))
  const maxInFlight = lib.int('max-inflight', 0)

  const sc = await lib.connect(c)
  const opts = sc.subscriptionOptions()
    .setDurableName(durable)
    .setManualAckMode(true)
    .setAckWait(ackWait)
  if (maxInFlight > 0) opts.setMaxInFlight(maxInFlight)
  if (lib.bool('deliver-all')) opts.setDeliverAllAvailable()

  const acked = [] // distinct sequences acked, in the order first acked
  const ackedSet = new Set()
  let receivedCount = 0
  let reached
  const enough = new Promise((resolve) => { reached = resolve })
  if (count <= 0) reached()

  const onMessage = (msg) => {
    receivedCount++
    const seq = msg.getSequence()
    const ack = acked.length < count // a redelivery of an acked seq is acked again
    if (ack) msg.ack()
    lib.received('durable', msg, ack)
    if (ack && !ackedSet.has(seq)) {
      ackedSet.add(seq)
      acked.push(seq)
      if (acked.length === count) reached()
    }
  }
  lib.setStage(`subscribing durable ${durable} on ${channel}`)
  const sub = await lib.subscribe(sc, channel, null, opts, 'durable', onMessage)
  lib.setStage(() => `waiting for ${count} messages on ${channel} (acked ${acked.length}: ${JSON.stringify(acked)})`)
  await enough

  if (lib.bool('close-sub')) {
    lib.setStage('closing the subscription')
    await new Promise((resolve, reject) => {
      sub.removeAllListeners('error')
      sub.removeAllListeners('timeout')
      sub.once('closed', resolve)
      sub.once('error', (e) => reject(new Error(`subscription close failed: ${lib.errText(e)}`)))
      sub.once('timeout', (e) => reject(new Error(`subscription close timed out: ${lib.errText(e)}`)))
      sub.close()
    })
    lib.emit('sub_closed', {})
  }
  await lib.close(sc)
  lib.emit('summary', { acked, received: receivedCount })
})
