<?php
/**
 * Sends thin, signed events to the jobgate gateway without ever blocking the shop.
 *
 * - A short timeout (2 s total, 1 s to connect): a slow gateway never holds up a checkout.
 * - An event that cannot be delivered (network error, timeout, 429 or 5xx) is kept in the
 *   `jobgate_event` table with its webhook-id and retried later with the same id, so the
 *   gateway deduplicates a delivery that did arrive.
 * - Each retry is re-signed with a fresh timestamp (the gateway accepts ±5 minutes).
 */
class JobgateClient
{
    const TIMEOUT_MS = 2000;
    const CONNECT_TIMEOUT_MS = 1000;
    const MAX_ATTEMPTS = 20;

    /** @var string */
    private $url;
    /** @var string[] */
    private $secrets;
    /** @var callable|null fn(array $row): void, stores an unsent event */
    private $store;

    public function __construct($url, array $secrets, $store = null)
    {
        $this->url = $url;
        $this->secrets = $secrets;
        $this->store = $store;
    }

    /**
     * @param array $event {type, shop: {id, url}, data: {...}, occurred_at}
     * @return bool true when the gateway answered 2xx
     */
    public function send(array $event, $messageId = null)
    {
        $body = json_encode($event, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        if ($messageId === null) {
            $messageId = JobgateSigner::newMessageId();
        }
        $delivered = $this->post($messageId, $body);
        if (!$delivered && $this->store !== null) {
            call_user_func($this->store, array('message_id' => $messageId, 'body' => $body));
        }
        return $delivered;
    }

    /**
     * POST one signed body; false on any failure (never throws into the shop).
     */
    public function post($messageId, $body)
    {
        if ($this->url === '' || !function_exists('curl_init')) {
            return false;
        }
        try {
            $headers = array();
            foreach (JobgateSigner::headers($this->secrets, $messageId, time(), $body) as $name => $value) {
                $headers[] = $name . ': ' . $value;
            }
            $curl = curl_init($this->url);
            curl_setopt_array($curl, array(
                CURLOPT_POST => true,
                CURLOPT_POSTFIELDS => $body,
                CURLOPT_HTTPHEADER => $headers,
                CURLOPT_RETURNTRANSFER => true,
                CURLOPT_FOLLOWLOCATION => false,
                CURLOPT_NOSIGNAL => true,
                CURLOPT_TIMEOUT_MS => self::TIMEOUT_MS,
                CURLOPT_CONNECTTIMEOUT_MS => self::CONNECT_TIMEOUT_MS,
            ));
            curl_exec($curl);
            $status = (int) curl_getinfo($curl, CURLINFO_HTTP_CODE);
            curl_close($curl);
            // 4xx other than 429 will not get better by retrying: drop it (the gateway logged it).
            return ($status >= 200 && $status < 300) || ($status >= 400 && $status < 500 && $status !== 429);
        } catch (Exception $e) {
            return false;
        }
    }
}
