// The LiveKit part of the widget, built as its own hashed ES module and
// imported only when a conversation starts.
import { LogLevel, Room, RoomEvent, RpcError, Track, setLogLevel } from 'livekit-client';
import type { TextStreamReader } from 'livekit-client';
import type { LiveHooks, LiveKitGrant, LiveSession } from './types';

const CHAT = 'lk.chat';
const TRANSCRIPTION = 'lk.transcription';
const FORM_TOPIC = 'anyreach.form';
const FORM_SUBMITTED_TOPIC = 'anyreach.form_submitted';
const REQUEST_FORM = 'anyreach.requestForm';

function formIdOf(payload: string): string | null {
  try {
    const v = JSON.parse(payload);
    if (typeof v === 'string') return v;
    return v && typeof v.form_id === 'string' ? v.form_id : null;
  } catch {
    return payload.trim() || null;
  }
}

export async function connect(grant: LiveKitGrant, hooks: LiveHooks): Promise<LiveSession> {
  // The host page's console belongs to the site owner: only LiveKit's errors go there.
  setLogLevel(LogLevel.error);
  const room = new Room({ audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
  let leaving = false;

  // One text stream is one message, or one version of a transcription segment:
  // agents stream deltas within a stream and resend a segment as it firms up.
  const streamed = async (reader: TextStreamReader, from: { identity: string }) => {
    const attrs = reader.info.attributes || {};
    const id = attrs['lk.segment_id'] || reader.info.id;
    const role = from.identity === room.localParticipant.identity ? 'visitor' : 'agent';
    let text = '';
    try {
      for await (const chunk of reader) {
        text += chunk;
        if (text.trim()) hooks.text(id, role, text, false);
      }
    } finally {
      const final = reader.info.topic === CHAT || attrs['lk.transcription_final'] !== 'false';
      if (text.trim()) hooks.text(id, role, text, final);
    }
  };
  room.registerTextStreamHandler(CHAT, streamed);
  room.registerTextStreamHandler(TRANSCRIPTION, streamed);

  room.registerRpcMethod(REQUEST_FORM, async ({ payload }) => {
    const id = formIdOf(payload);
    if (!id || !hooks.formRequested(id)) throw new RpcError(1404, 'unknown form');
    return JSON.stringify({ shown: true });
  });

  room
    .on(RoomEvent.DataReceived, (payload, _p, _k, topic) => {
      if (topic !== FORM_TOPIC) return;
      const id = formIdOf(new TextDecoder().decode(payload));
      if (id) hooks.formRequested(id);
    })
    .on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind === Track.Kind.Audio) hooks.mount(track.attach());
    })
    .on(RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()))
    .on(RoomEvent.ParticipantConnected, () => hooks.agentPresent(true))
    .on(RoomEvent.ParticipantDisconnected, () => hooks.agentPresent(room.remoteParticipants.size > 0))
    .on(RoomEvent.Reconnecting, () => hooks.state('reconnecting'))
    .on(RoomEvent.Reconnected, () => hooks.state('connected'))
    .on(RoomEvent.MediaDevicesError, () => hooks.micDenied())
    .on(RoomEvent.Disconnected, () => {
      if (!leaving) hooks.state('disconnected');
    });

  // LiveKit gives up on its own after about 15 s; this bounds the whole attempt.
  const timer = setTimeout(() => void room.disconnect(), 20000);
  try {
    await room.connect(grant.url, grant.token);
  } catch (e) {
    leaving = true;
    room.removeAllListeners();
    await room.disconnect();
    throw e;
  } finally {
    clearTimeout(timer);
  }
  hooks.agentPresent(room.remoteParticipants.size > 0);

  return {
    async sendText(text) {
      await room.localParticipant.sendText(text, { topic: CHAT });
    },
    async setMic(on) {
      try {
        await room.localParticipant.setMicrophoneEnabled(on);
        return true;
      } catch {
        return false;
      }
    },
    formSubmitted(formId, values) {
      const data = new TextEncoder().encode(JSON.stringify({ form_id: formId, values }));
      room.localParticipant.publishData(data, { reliable: true, topic: FORM_SUBMITTED_TOPIC }).catch(() => {});
    },
    startAudio() {
      room.startAudio().catch(() => {});
    },
    async disconnect() {
      leaving = true;
      room.removeAllListeners();
      room.remoteParticipants.forEach((p) => p.audioTrackPublications.forEach((pub) => pub.track?.detach().forEach((el) => el.remove())));
      await room.disconnect();
    },
  };
}
