import type { Config, FeedbackType, FieldType, Form, FormField, Option } from './types';

// The server sends config v1 with every default filled in; the loader still
// reads it defensively so that an older or partial answer cannot break the page.

type Raw = Record<string, unknown>;

const obj = (v: unknown): Raw => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | null => (typeof v === 'string' && v.trim() ? v : null);
const bool = (v: unknown, d: boolean): boolean => (typeof v === 'boolean' ? v : d);
const oneOf = <T extends string>(v: unknown, allowed: readonly T[], d: T): T =>
  allowed.includes(v as T) ? (v as T) : d;
const colour = (v: unknown, d: string): string => (typeof v === 'string' && /^#[0-9a-f]{6}$/i.test(v) ? v : d);

const FIELD_TYPES: readonly FieldType[] = ['text', 'email', 'phone', 'textarea', 'select', 'checkbox'];
const FEEDBACK_TYPES: readonly FeedbackType[] = ['thumbs', 'stars', 'scale_5'];

function option(v: unknown): Option | null {
  if (typeof v === 'string') return { label: v, value: v };
  const o = obj(v);
  const value = str(o.value) ?? str(o.label);
  return value ? { label: str(o.label) ?? value, value } : null;
}

function field(v: unknown): FormField | null {
  const f = obj(v);
  const name = str(f.name);
  if (!name) return null;
  return {
    name,
    label: str(f.label) ?? name,
    type: oneOf(f.type, FIELD_TYPES, 'text'),
    required: bool(f.required, false),
    options: arr(f.options).map(option).filter((o): o is Option => !!o),
  };
}

function form(v: unknown): Form | null {
  const f = obj(v);
  const id = str(f.id);
  if (!id) return null;
  return {
    id,
    title: str(f.title) ?? '',
    trigger: oneOf(f.trigger, ['pre_chat', 'agent_request'] as const, 'agent_request'),
    fields: arr(f.fields).map(field).filter((x): x is FormField => !!x),
  };
}

export function readConfig(body: unknown): Config {
  const v1 = obj(obj(obj(body).config).v1);
  const ap = obj(v1.appearance);
  const br = obj(v1.branding);
  const tx = obj(v1.text);
  const vo = obj(v1.voice);
  const fb = obj(v1.feedback);
  return {
    appearance: {
      theme: oneOf(ap.theme, ['light', 'dark', 'auto'] as const, 'auto'),
      primary_color: colour(ap.primary_color, '#2563eb'),
      accent_color: colour(ap.accent_color, '#0ea5e9'),
      position: oneOf(ap.position, ['bottom-right', 'bottom-left'] as const, 'bottom-right'),
      launcher_label: str(ap.launcher_label),
      bubble_icon: str(ap.bubble_icon) ?? 'chat',
    },
    branding: {
      display_name: str(br.display_name),
      avatar_url: str(br.avatar_url),
      logo_url: str(br.logo_url),
      show_powered_by: bool(br.show_powered_by, true),
    },
    text: {
      enabled: bool(tx.enabled, true),
      welcome_message: str(tx.welcome_message),
      input_placeholder: str(tx.input_placeholder),
    },
    voice: { enabled: bool(vo.enabled, true), mode: oneOf(vo.mode, ['push_to_talk', 'open_mic'] as const, 'push_to_talk') },
    quick_actions: arr(v1.quick_actions)
      .map(obj)
      .map((q) => ({ label: str(q.label) ?? str(q.message) ?? '', message: str(q.message) ?? str(q.label) ?? '' }))
      .filter((q) => q.message),
    forms: arr(v1.forms).map(form).filter((f): f is Form => !!f),
    feedback: {
      enabled: bool(fb.enabled, false),
      type: oneOf(fb.type, FEEDBACK_TYPES, 'thumbs'),
      prompt: str(fb.prompt),
      allow_comment: bool(fb.allow_comment, true),
    },
    locale: str(v1.locale),
    identity: { mode: oneOf(obj(v1.identity).mode, ['off', 'optional', 'required'] as const, 'off') },
  };
}

/** An image address the widget may load: https, or http only on an http page (development). */
export function safeUrl(v: string | null): string | null {
  if (!v) return null;
  try {
    const u = new URL(v);
    return u.protocol === 'https:' || (u.protocol === 'http:' && location.protocol === 'http:') ? u.href : null;
  } catch {
    return null;
  }
}

/** Relative luminance of a #rrggbb colour (WCAG 2). */
function luminance(hex: string): number {
  const n = parseInt(hex.slice(1), 16);
  const lin = (c: number) => ((c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  return 0.2126 * lin(n >> 16) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255);
}

/**
 * Text colour for a customer's colour: black or white, whichever contrasts more. One of the two
 * always reaches at least 4.58:1 (the worst case is a mid grey), so no colour needs refusing.
 */
export function onColour(hex: string): string {
  const l = luminance(hex);
  return (l + 0.05) / 0.05 >= 1.05 / (l + 0.05) ? '#000000' : '#ffffff';
}
