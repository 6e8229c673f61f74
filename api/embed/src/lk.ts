// The LiveKit part of the widget, built as its own hashed ES module and
// imported only when a conversation starts.
import { LogLevel, Room, RoomEvent, RpcError, Track, setLogLevel } from 'livekit-client';
import type { AudioCaptureOptions, Participant, TextStreamReader } from 'livekit-client';
import type { LiveHooks, LiveKitGrant, LiveRoom } from './types';

const CHAT = 'lk.chat';
const TRANSCRIPTION = 'lk.transcription';
const FORM_TOPIC = 'anyreach.form';
const FORM_SUBMITTED_TOPIC = 'anyreach.form_submitted';
const REQUEST_FORM = 'anyreach.requestForm';
const AGENT_STATE = 'lk.agent.state';
// LiveKit reserves RPC error codes 1001-1999 for itself; ours live outside that range (docs/agents.md).
const RPC_UNKNOWN_FORM = 4404;

function formIdOf(payload: string): string | null {
  try {
    const v = JSON.parse(payload);
    if (typeof v === 'string') return v;
    return v && typeof v.form_id === 'string' ? v.form_id : null;
  } catch {
    return payload.trim() || null;
  }
}

/**
 * An agent is present once it has joined and set its state attribute past `initializing`, as
 * livekit-agents does when its session starts: only then has it registered its text handlers,
 * and the server forwards a text stream only to participants already in the room.
 */
const isReadyAgent = (p: Participant) =>
  p.isAgent && !!p.attributes[AGENT_STATE] && p.attributes[AGENT_STATE] !== 'initializing';

/**
 * A room for one visit of the conversation. It exists before it is joined, so that a microphone
 * press can start livekit-client's pre-connect buffer while the conversation is still being
 * started: what the visitor says before the agent joins is handed to the agent once it does.
 */
export function open(hooks: LiveHooks): LiveRoom {
  // The host page's console belongs to the site owner: only LiveKit's errors go there.
  setLogLevel(LogLevel.error);
  const room = new Room({ audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
  let leaving = false;
  let joined = false;

  // One text stream is one message, or one version of a transcription segment. livekit-agents marks a
  // reply final in the stream's closing packet, which replaces `reader.info`: read the attributes after the end.
  const streamed = async (reader: TextStreamReader, from: { identity: string }) => {
    const id = reader.info.attributes?.['lk.segment_id'] || reader.info.id;
    const role = from.identity === room.localParticipant.identity ? 'visitor' : 'agent';
    let text = '';
    try {
      for await (const chunk of reader) {
        text += chunk;
        if (text.trim()) hooks.text(id, role, text, false);
      }
    } finally {
      const attrs = reader.info.attributes || {};
      const final = reader.info.topic === CHAT || attrs['lk.transcription_final'] !== 'false';
      if (text.trim()) hooks.text(id, role, text, final);
    }
  };
  room.registerTextStreamHandler(CHAT, streamed);
  room.registerTextStreamHandler(TRANSCRIPTION, streamed);

  room.registerRpcMethod(REQUEST_FORM, async ({ payload }) => {
    const id = formIdOf(payload);
    if (!id || !hooks.formRequested(id)) throw new RpcError(RPC_UNKNOWN_FORM, 'unknown form');
    return JSON.stringify({ shown: true });
  });

  const presence = () => {
    if (joined) hooks.agentPresent([...room.remoteParticipants.values()].some(isReadyAgent));
  };

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
    .on(RoomEvent.ParticipantConnected, presence)
    .on(RoomEvent.ParticipantDisconnected, presence)
    .on(RoomEvent.ParticipantAttributesChanged, presence)
    .on(RoomEvent.AudioPlaybackStatusChanged, () => hooks.audioBlocked(!room.canPlaybackAudio))
    .on(RoomEvent.Reconnecting, () => hooks.state('reconnecting'))
    .on(RoomEvent.Reconnected, () => (hooks.state('connected'), presence()))
    .on(RoomEvent.MediaDevicesError, () => hooks.micDenied())
    .on(RoomEvent.Disconnected, () => {
      // Only a joined room is lost: a failed join is the join's own error, not a disconnection to recover from.
      if (!leaving && joined) hooks.state('disconnected');
    });

  const leave = async () => {
    leaving = true;
    room.removeAllListeners();
    room.remoteParticipants.forEach((p) => p.audioTrackPublications.forEach((pub) => pub.track?.detach().forEach((el) => el.remove())));
    await room.disconnect();
  };

  return {
    async join(grant: LiveKitGrant) {
      // LiveKit gives up on its own after about 15 s; this bounds the whole attempt.
      const timer = setTimeout(() => void room.disconnect(), 20000);
      try {
        await room.connect(grant.url, grant.token);
      } catch (e) {
        await leave();
        throw e;
      } finally {
        clearTimeout(timer);
      }
      joined = true;
      presence();
      if (!room.canPlaybackAudio) hooks.audioBlocked(true);
    },
    async sendText(text) {
      await room.localParticipant.sendText(text, { topic: CHAT });
    },
    async setMic(on) {
      try {
        // Before the room is joined, the track records into the pre-connect buffer and is published on joining.
        // livekit-client 2.23 reads `preConnectBuffer` from the capture options (merged over the room's publish
        // defaults), not from the publish options where its types declare it.
        const capture = on && !joined ? ({ preConnectBuffer: true } as AudioCaptureOptions) : undefined;
        await room.localParticipant.setMicrophoneEnabled(on, capture);
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
      room.startAudio().then(
        () => hooks.audioBlocked(!room.canPlaybackAudio),
        () => {},
      );
    },
    disconnect: leave,
  };
}
