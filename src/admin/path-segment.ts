/** decodeURIComponent throws URIError on `%`, `%zz` or broken UTF-8; a path from outside must not. */
export function decodePathSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}
