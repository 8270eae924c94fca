<?php
/**
 * Posts one signed body to the jobgate gateway; never throws into the shop.
 *
 * The webhook-id is the caller's (stored with the event), so every retry of one event carries
 * the same id and the gateway answers a replay with the first delivery's jobs instead of
 * creating new ones. Each attempt is re-signed with a fresh timestamp (the gateway accepts
 * ±5 minutes). Short timeouts: this only ever runs after the response or from cron.
 */
class JobgateClient
{
    const TIMEOUT_MS = 5000;
    const CONNECT_TIMEOUT_MS = 2000;

    /** @var string */
    private $url;
    /** @var string[] */
    private $secrets;
    /** @var int */
    private $timeoutMs;

    public function __construct($url, array $secrets, $timeoutMs = self::TIMEOUT_MS)
    {
        $this->url = $url;
        $this->secrets = $secrets;
        $this->timeoutMs = max(1000, (int) $timeoutMs);
    }

    /**
     * @return int the HTTP status, 0 when the gateway could not be reached
     */
    public function post($messageId, $body)
    {
        return $this->request($this->url, $messageId, $body, $answer);
    }

    /**
     * @param string|null $answer receives the response body
     * @return int the HTTP status, 0 when the gateway could not be reached
     */
    public function request($url, $messageId, $body, &$answer = null)
    {
        $answer = null;
        if ($url === '' || !function_exists('curl_init')) {
            return 0;
        }
        try {
            $headers = array();
            foreach (JobgateSigner::headers($this->secrets, $messageId, time(), $body) as $name => $value) {
                $headers[] = $name . ': ' . $value;
            }
            $curl = curl_init($url);
            curl_setopt_array($curl, array(
                CURLOPT_POST => true,
                CURLOPT_POSTFIELDS => $body,
                CURLOPT_HTTPHEADER => $headers,
                CURLOPT_RETURNTRANSFER => true,
                CURLOPT_FOLLOWLOCATION => false,
                CURLOPT_NOSIGNAL => true,
                CURLOPT_TIMEOUT_MS => $this->timeoutMs,
                CURLOPT_CONNECTTIMEOUT_MS => min($this->timeoutMs, max(self::CONNECT_TIMEOUT_MS, intdiv($this->timeoutMs, 3))),
            ));
            $result = curl_exec($curl);
            $status = (int) curl_getinfo($curl, CURLINFO_HTTP_CODE);
            curl_close($curl);
            $answer = is_string($result) ? $result : null;
            return $status;
        } catch (Exception $e) {
            return 0;
        }
    }

    /**
     * 2xx: delivered (200 is a replay of an earlier delivery: nothing new was created).
     */
    public static function delivered($status)
    {
        return $status >= 200 && $status < 300;
    }

    /**
     * A 4xx other than 408/429 will not get better by retrying (bad secret, malformed event).
     */
    public static function permanent($status)
    {
        return $status >= 400 && $status < 500 && $status !== 408 && $status !== 429;
    }
}
