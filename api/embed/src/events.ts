export type EventName = 'message' | 'open' | 'close' | 'conversation';
export type Listener = (detail?: unknown) => void;

/** The page's listeners; one that throws does not stop the others or the widget. */
export class Emitter {
  private listeners: Partial<Record<EventName, Set<Listener>>> = {};

  on(name: EventName, fn: Listener): () => void {
    const set = (this.listeners[name] ||= new Set());
    set.add(fn);
    return () => set.delete(fn);
  }

  emit(name: EventName, detail?: unknown): void {
    this.listeners[name]?.forEach((fn) => {
      try {
        fn(detail);
      } catch (e) {
        console.error(e);
      }
    });
  }
}
