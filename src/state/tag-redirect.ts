/**
 * The `redirect-https` option of a `urlprefix-` tag: on the plain-HTTP listener the route answers
 * with a redirect to HTTPS instead of serving. A flag without a value (`redirect-https`); kept
 * apart from the other options' parsing so each can change on its own.
 */
export const REDIRECT_HTTPS_OPTION = 'redirect-https';

/** True for the option, in either spelling a tag author might write (`redirect-https`, `redirect-https=true`). */
export function isRedirectHttpsOption(option: string): boolean {
  return option === REDIRECT_HTTPS_OPTION || option === `${REDIRECT_HTTPS_OPTION}=true`;
}
